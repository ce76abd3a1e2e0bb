//! Ordering services so that dependencies come first, and finding cycles.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A dependency cycle among services, which has no order to update them in.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[error("dependency cycle `{}`: remove one of these dependencies", path.join(" -> "))]
pub struct CycleError {
    /// The services on the cycle, in dependency order, with the first
    /// repeated at the end: `["a", "b", "a"]` when `a` depends on `b` and `b`
    /// on `a`.
    pub path: Vec<String>,
}

/// Progress of the depth-first search at one service.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Unvisited,
    OnPath,
    Done,
}

/// Orders services so that every service comes after its direct
/// dependencies.
///
/// `services` yields each service's name with the names of its direct
/// dependencies. A name given twice has its dependencies merged. A dependency
/// that is not itself listed as a service is left out of the order without an
/// error, so callers that require every dependency to exist check that
/// separately. The order is deterministic: a depth-first search over names in
/// lexicographic order.
///
/// # Errors
///
/// [`CycleError`] with the first cycle found, for example `a -> b -> a`.
pub fn topological_order<'a, S, D>(services: S) -> Result<Vec<String>, CycleError>
where
    S: IntoIterator<Item = (&'a str, D)>,
    D: IntoIterator<Item = &'a str>,
{
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, dependencies) in services {
        graph.entry(name).or_default().extend(dependencies);
    }
    for dependencies in graph.values_mut() {
        dependencies.sort_unstable();
        dependencies.dedup();
    }

    let mut marks: BTreeMap<&str, Mark> =
        graph.keys().map(|&name| (name, Mark::Unvisited)).collect();
    let mut order = Vec::with_capacity(graph.len());

    for &root in graph.keys() {
        if marks.get(root) != Some(&Mark::Unvisited) {
            continue;
        }
        marks.insert(root, Mark::OnPath);

        // Each entry is a service on the current path and the index of its
        // next dependency to visit.
        let mut path: Vec<(&str, usize)> = vec![(root, 0)];
        while let Some((service, next)) = path.last_mut() {
            let dependencies = graph.get(*service).map_or(&[][..], Vec::as_slice);
            let Some(&dependency) = dependencies.get(*next) else {
                marks.insert(*service, Mark::Done);
                order.push((*service).to_owned());
                path.pop();
                continue;
            };
            *next += 1;

            match marks.get(dependency) {
                None | Some(Mark::Done) => {}
                Some(Mark::Unvisited) => {
                    marks.insert(dependency, Mark::OnPath);
                    path.push((dependency, 0));
                }
                Some(Mark::OnPath) => return Err(cycle_through(&path, dependency)),
            }
        }
    }
    Ok(order)
}

/// Builds the cycle that closes when the last service on `path` depends on
/// `repeated`, which is also on `path`.
fn cycle_through(path: &[(&str, usize)], repeated: &str) -> CycleError {
    let start = path
        .iter()
        .position(|&(service, _)| service == repeated)
        .unwrap_or(0);
    let mut cycle: Vec<String> = path[start..]
        .iter()
        .map(|&(service, _)| service.to_owned())
        .collect();
    cycle.push(repeated.to_owned());
    CycleError { path: cycle }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order_of(services: &[(&'static str, &[&'static str])]) -> Result<Vec<String>, CycleError> {
        topological_order(
            services
                .iter()
                .map(|&(name, deps)| (name, deps.iter().copied())),
        )
    }

    fn position(order: &[String], name: &str) -> Option<usize> {
        order.iter().position(|service| service == name)
    }

    #[test]
    fn dependencies_come_before_dependents() -> Result<(), CycleError> {
        let order = order_of(&[
            ("api", &["auth", "db"]),
            ("auth", &["db"]),
            ("db", &[]),
            ("web", &["api"]),
        ])?;
        assert_eq!(order.len(), 4);
        assert!(position(&order, "db") < position(&order, "auth"));
        assert!(position(&order, "auth") < position(&order, "api"));
        assert!(position(&order, "api") < position(&order, "web"));
        Ok(())
    }

    #[test]
    fn order_is_deterministic() -> Result<(), CycleError> {
        let order = order_of(&[("c", &[]), ("a", &["c"]), ("b", &[])])?;
        assert_eq!(order, vec!["c", "a", "b"]);
        Ok(())
    }

    #[test]
    fn two_service_cycle_is_named() {
        let result = order_of(&[("a", &["b"]), ("b", &["a"])]);
        let message = result.err().map(|e| e.to_string());
        assert_eq!(
            message.as_deref(),
            Some("dependency cycle `a -> b -> a`: remove one of these dependencies")
        );
    }

    #[test]
    fn self_dependency_is_cycle() {
        let result = order_of(&[("a", &["a"])]);
        let path = result.err().map(|e| e.path);
        assert_eq!(path, Some(vec!["a".to_owned(), "a".to_owned()]));
    }

    #[test]
    fn cycle_path_leaves_out_services_leading_to_it() {
        // `entry` reaches the cycle b -> c -> d -> b but is not part of it.
        let result = order_of(&[
            ("entry", &["b"]),
            ("b", &["c"]),
            ("c", &["d"]),
            ("d", &["b"]),
        ]);
        let path = result.err().map(|e| e.path.join(" -> "));
        assert_eq!(path.as_deref(), Some("b -> c -> d -> b"));
    }

    #[test]
    fn unknown_dependency_is_left_out() -> Result<(), CycleError> {
        let order = order_of(&[("api", &["external"])])?;
        assert_eq!(order, vec!["api"]);
        Ok(())
    }

    #[test]
    fn repeated_service_merges_dependencies() -> Result<(), CycleError> {
        let order = order_of(&[
            ("api", &["db"]),
            ("api", &["cache"]),
            ("cache", &[]),
            ("db", &[]),
        ])?;
        assert_eq!(position(&order, "api"), Some(2));
        Ok(())
    }

    #[test]
    fn long_chain_does_not_overflow_stack() -> Result<(), CycleError> {
        let names: Vec<String> = (0..100_000).map(|i| format!("s{i:06}")).collect();
        let services = names.iter().enumerate().map(|(i, name)| {
            let dependency = names.get(i + 1).map(String::as_str);
            (name.as_str(), dependency)
        });
        let order = topological_order(services)?;
        assert_eq!(order.first().map(String::as_str), Some("s099999"));
        Ok(())
    }
}
