//! Loading an ONNX model into tract and running it on a batch of feature rows.
//!
//! [`TractModel::load`] checks, in order: the metadata (features the host can produce),
//! that the file decodes, that tract implements every operator, that the declared input
//! is one float tensor `[N, F]` and the declared output a float tensor `[N, K]` or `[N]`.
//! Only then does it type, optimise and plan the graph, with `N` left symbolic so one plan
//! serves every batch size. Each check fails with a [`ModelError`] that names the problem.

use tract_onnx::pb;
use tract_onnx::prelude::*;

use super::error::{ModelError, tract_error};
use super::features::FEATURE_COUNT;
use super::metadata::ModelMetadata;

/// ONNX `TensorProto.DataType` code of 32-bit floats.
const ONNX_FLOAT: i32 = 1;

/// A model that tract has planned, with the mapping from host features to its inputs.
pub struct TractModel {
    reference: String,
    columns: Vec<usize>,
    output_column: Option<usize>,
    state: TypedSimpleState,
    input: Vec<f32>,
}

impl std::fmt::Debug for TractModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractModel")
            .field("reference", &self.reference)
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

impl TractModel {
    /// Checks and plans the ONNX model in `bytes` described by `metadata`.
    pub fn load(bytes: &[u8], metadata: &ModelMetadata) -> Result<Self, ModelError> {
        let columns = metadata.validate()?;
        let reference = metadata.reference();
        let onnx = tract_onnx::onnx();
        let proto = onnx
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| ModelError::Decode(tract_error(e)))?;
        let graph = proto.graph.as_ref().ok_or_else(|| ModelError::Shape {
            model: reference.clone(),
            detail: "the file has no graph".to_owned(),
        })?;

        let mut unsupported: Vec<String> = graph
            .node
            .iter()
            .filter(|node| !onnx.op_register.0.contains_key(&node.op_type))
            .map(|node| node.op_type.clone())
            .collect();
        unsupported.sort();
        unsupported.dedup();
        if !unsupported.is_empty() {
            return Err(ModelError::UnsupportedOperators {
                model: reference,
                operators: unsupported,
            });
        }

        let shape_error = |detail: String| ModelError::Shape {
            model: reference.clone(),
            detail,
        };
        check_input(graph, metadata).map_err(shape_error)?;
        let (output_index, output_column) = check_output(graph, metadata).map_err(shape_error)?;

        let prepare_error = |e: anyhow::Error| ModelError::Prepare {
            model: reference.clone(),
            source: tract_error(e),
        };
        let mut model = onnx.model_for_proto_model(&proto).map_err(prepare_error)?;
        let batch = model.sym("N");
        let fact = InferenceFact::dt_shape(
            f32::datum_type(),
            tvec![batch.to_dim(), columns.len().to_dim()],
        );
        model.set_input_fact(0, fact).map_err(prepare_error)?;
        let output = model.output_outlets().map_err(prepare_error)?[output_index];
        model
            .select_output_outlets(&[output])
            .map_err(prepare_error)?;
        let plan = model
            .into_optimized()
            .and_then(|typed| typed.into_runnable())
            .map_err(prepare_error)?;
        let state = plan.spawn().map_err(prepare_error)?;

        Ok(Self {
            reference,
            columns,
            output_column,
            state,
            input: Vec::new(),
        })
    }

    /// Returns `NAME@VERSION` of the loaded model.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// Runs the model on host feature rows and returns one probability per row.
    ///
    /// Each row is in host feature order; the columns the model declares are picked out
    /// of it. An empty batch returns an empty vector without running the model.
    pub fn run(&mut self, rows: &[[f32; FEATURE_COUNT]]) -> Result<Vec<f64>, ModelError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.input.clear();
        for row in rows {
            self.input
                .extend(self.columns.iter().map(|&column| row[column]));
        }

        let inference_error = |e: anyhow::Error| ModelError::Inference {
            model: self.reference.clone(),
            source: tract_error(e),
        };
        let tensor = Tensor::from_shape(&[rows.len(), self.columns.len()], &self.input)
            .map_err(inference_error)?;
        let outputs = self
            .state
            .run(tvec![tensor.into_tvalue()])
            .map_err(inference_error)?;
        let view = outputs[0]
            .to_plain_array_view::<f32>()
            .map_err(inference_error)?;

        let probabilities: Vec<f64> = match (self.output_column, view.ndim()) {
            (Some(column), 2) => view
                .outer_iter()
                .map(|row| f64::from(row[column]))
                .collect(),
            (None, 1) => view.iter().map(|&p| f64::from(p)).collect(),
            _ => Vec::new(),
        };
        if probabilities.len() != rows.len() {
            return Err(ModelError::Shape {
                model: self.reference.clone(),
                detail: format!(
                    "output `{}` has shape {:?} for a batch of {} rows",
                    self.reference,
                    view.shape(),
                    rows.len()
                ),
            });
        }
        Ok(probabilities)
    }
}

/// Returns the dimensions of a float tensor value, `None` for a symbolic one, or a reason.
fn float_dims(value: &pb::ValueInfoProto) -> Result<Vec<Option<i64>>, String> {
    let Some(pb::type_proto::Value::TensorType(tensor)) =
        value.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(format!("`{}` is not a tensor", value.name));
    };
    if tensor.elem_type != ONNX_FLOAT {
        return Err(format!(
            "`{}` has element type {} but must be float (ONNX type 1)",
            value.name, tensor.elem_type
        ));
    }
    let shape = tensor
        .shape
        .as_ref()
        .ok_or_else(|| format!("`{}` declares no shape", value.name))?;
    Ok(shape
        .dim
        .iter()
        .map(|dim| match dim.value {
            Some(pb::tensor_shape_proto::dimension::Value::DimValue(size)) => Some(size),
            _ => None,
        })
        .collect())
}

fn check_input(graph: &pb::GraphProto, metadata: &ModelMetadata) -> Result<(), String> {
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|input| !initializers.contains(input.name.as_str()))
        .collect();
    let names: Vec<&str> = inputs.iter().map(|input| input.name.as_str()).collect();
    if names != [metadata.input.as_str()] {
        return Err(format!(
            "inputs are {names:?} but the metadata declares exactly one, `{}`",
            metadata.input
        ));
    }

    let dims = float_dims(inputs[0])?;
    let expected = metadata.features.len() as i64;
    match dims.as_slice() {
        [_, Some(width)] if *width == expected => Ok(()),
        [_, None] => Ok(()),
        _ => Err(format!(
            "input `{}` has shape {} but must be [N, {expected}] for the {expected} declared features",
            metadata.input,
            format_dims(&dims)
        )),
    }
}

/// Returns the output's position among the graph outputs and the column to read.
fn check_output(
    graph: &pb::GraphProto,
    metadata: &ModelMetadata,
) -> Result<(usize, Option<usize>), String> {
    let Some(index) = graph
        .output
        .iter()
        .position(|output| output.name == metadata.output)
    else {
        let names: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        return Err(format!(
            "output `{}` is missing: the graph has {names:?}",
            metadata.output
        ));
    };

    let dims = float_dims(&graph.output[index])?;
    match dims.as_slice() {
        [_] => Ok((index, None)),
        [_, Some(width)] if metadata.output_column < *width as usize => {
            Ok((index, Some(metadata.output_column)))
        }
        [_, None] => Ok((index, Some(metadata.output_column))),
        _ => Err(format!(
            "output `{}` has shape {} but must be [N] or [N, K] with output_column {} < K",
            metadata.output,
            format_dims(&dims),
            metadata.output_column
        )),
    }
}

fn format_dims(dims: &[Option<i64>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|dim| dim.map_or_else(|| "?".to_owned(), |size| size.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}
