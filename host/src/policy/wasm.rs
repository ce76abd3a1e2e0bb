//! WebAssembly component policies run by wasmtime.
//!
//! A component is compiled once per process (cached by digest) and
//! pre-linked against WASI and the `umbra:policy/host` imports. WASI is
//! granted nothing: no preopened directories, no environment, no arguments,
//! no sockets or name lookups. Stdout and stderr go to a bounded capture that
//! the host writes to its log under a rate limit. Each call runs under an
//! epoch deadline and a memory limit. With instance reuse (the default) one
//! instance serves every call until it fails; a failed instance is dropped,
//! and the next call instantiates afresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::sandbox::{CapturedOutput, LogLimiter, MAX_LOG_LINE_BYTES, SandboxLimits, truncate};
use super::types::{
    self, Action, AssetStatus, Comparison, DriftAssessment, LoadPlan, ProfileInfo, ServiceStatus,
    WireComparison,
};
use super::{Decision, LoadError, PolicyError, Settings};

/// Interval at which the shared engine's epoch advances. Deadlines are
/// rounded up to whole ticks, plus one tick of slack.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Deadline of the trial instantiation at load time.
const STARTUP_DEADLINE: Duration = Duration::from_millis(500);

/// Compiled components kept for reuse (hot reload of unchanged bytes, many
/// runtimes in one process). Older entries are evicted past this count.
const COMPILE_CACHE_ENTRIES: usize = 16;

/// Largest linear memory any policy may be configured for.
pub const MAX_MEMORY_LIMIT_BYTES: usize = 256 << 20;

/// Address space reserved per linear memory: all that a 32-bit index can reach.
const FULL_32_BIT_RESERVATION: u64 = 1 << 32;

/// Instance slots of the pooling allocator: live policy instances at once.
const POOL_INSTANCES: u32 = 128;

/// Metric names one instance may have numbered before it is replaced by a fresh
/// one, checked before each call. This bounds the names a long-lived instance
/// and the guest's own cache of them hold, to this count plus the comparisons
/// of one call.
const MAX_METRIC_NAMES: usize = 65_536;

fn engine_config(pooling: bool) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    if pooling {
        // Pooled slots make a fresh instance cheap: no mmap and munmap of
        // linear memory per call. A Rust component has a few core instances,
        // memories and tables per component instance.
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 8)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 8)
            .max_memory_size(MAX_MEMORY_LIMIT_BYTES);
        // Reserve 4 GiB of address space per memory (a policy still cannot grow past
        // `max_memory_size`): a 32-bit memory that cannot leave its reservation needs no
        // explicit bounds check on each load and store, which cuts the guest's own time.
        config.memory_reservation(FULL_32_BIT_RESERVATION);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Returns the process-wide engine, starting its epoch ticker on first use.
fn shared_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let engine = Engine::new(&engine_config(true)).unwrap_or_else(|error| {
            // Pooling reserves address space up front; a host with a small
            // address-space limit refuses it, and on-demand allocation works.
            tracing::warn!(%error, "pooling instance allocator unavailable, instantiating on demand");
            Engine::new(&engine_config(false)).unwrap_or_else(|error| panic!("invalid static wasmtime config: {error:#}"))
        });
        let weak = engine.weak();
        let spawned = std::thread::Builder::new().name("umbra-epoch".to_owned()).spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
        if let Err(error) = spawned {
            tracing::error!(%error, "failed to start the policy deadline ticker; wasm policies will run without deadlines");
        }
        engine
    })
}

/// Compiles `bytes`, or returns the cached component with the same digest.
fn compile(name: &str, digest: &str, bytes: &[u8]) -> Result<Component, LoadError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Component>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(component) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(digest)
    {
        return Ok(component.clone());
    }
    // wasmtime's own message for these cases dumps the expected bytes over many lines.
    if !bytes.starts_with(b"\0asm") {
        return Err(LoadError::NotWasm {
            name: name.to_owned(),
        });
    }
    if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
        return Err(LoadError::CoreModule {
            name: name.to_owned(),
        });
    }
    let component =
        Component::new(shared_engine(), bytes).map_err(|source| LoadError::Compile {
            name: name.to_owned(),
            source,
        })?;
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= COMPILE_CACHE_ENTRIES {
        cache.clear();
    }
    cache.insert(digest.to_owned(), component.clone());
    Ok(component)
}

/// Version of the `umbra:policy` contract this host implements (`wit/policy.wit`).
const CONTRACT_VERSION: &str = "0.2.0";

/// Rejects a component that imports or exports `umbra:policy` interfaces of another version,
/// with a message that names both versions instead of wasmtime's link error.
fn check_contract_version(name: &str, component: &Component) -> Result<(), LoadError> {
    let engine = shared_engine();
    let kind = component.component_type();
    let mut names = kind
        .imports(engine)
        .map(|(item, _)| item)
        .chain(kind.exports(engine).map(|(item, _)| item));
    let other = names.find(|item| {
        item.strip_prefix("umbra:policy/")
            .and_then(|rest| rest.split_once('@'))
            .is_some_and(|(_, version)| version != CONTRACT_VERSION)
    });
    match other {
        Some(found) => Err(LoadError::ContractVersion {
            name: name.to_owned(),
            found: found.to_owned(),
            expected: CONTRACT_VERSION,
        }),
        None => Ok(()),
    }
}

/// Returns the epoch ticks that cover `deadline`, plus one tick of slack.
fn deadline_ticks(deadline: Duration) -> u64 {
    let tick_us = EPOCH_TICK.as_micros().max(1);
    u64::try_from(deadline.as_micros().div_ceil(tick_us))
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// WASI version whose blocking functions are replaced; it must match the
/// interfaces `wasmtime_wasi::p2::add_to_linker_sync` defines.
const WASI_IO_POLL: &str = "wasi:io/poll@0.2.12";

/// Replaces WASI's blocking waits (`poll` and `pollable.block`, which
/// `std::thread::sleep` and every blocking read use) with functions that
/// trap. A blocked host call cannot be interrupted by the epoch deadline, so
/// a policy that could sleep could hold its decision far past the deadline.
fn deny_blocking(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_IO_POLL)?;
    for function in ["poll", "[method]pollable.block"] {
        poll.func_new(function, move |_, _, _, _| {
            Err(wasmtime::format_err!(
                "policy called `{WASI_IO_POLL}#{function}`: blocking calls are not allowed in policies"
            ))
        })?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// Per-instance state: WASI with no capabilities, the memory limiter, the
/// current call's settings and the instance's metric numbering.
struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    settings: Arc<Settings>,
    logs: Arc<LogLimiter>,
    metrics: MetricNames,
}

/// Numbers given to metric names for one instance (`metric-id` in the contract).
#[derive(Default)]
struct MetricNames {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl MetricNames {
    /// Returns `comparisons` as the contract sends them, numbering new names.
    fn wire(&mut self, comparisons: &[Comparison]) -> Vec<WireComparison> {
        comparisons
            .iter()
            .map(|comparison| WireComparison {
                metric: self.id(&comparison.metric),
                live: comparison.live,
                shadow: comparison.shadow,
                relative_change: comparison.relative_change,
                hl_shift: comparison.hl_shift,
                p_value: comparison.p_value,
                noise_floor: comparison.noise_floor,
                direction: comparison.direction,
            })
            .collect()
    }

    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        // `call` replaces an instance long before its numbering nears u32::MAX.
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::umbra::policy::types::Host for GuestState {}

impl types::umbra::policy::host::Host for GuestState {
    fn log(&mut self, level: types::Level, message: String) {
        let level = match level {
            types::Level::Debug => tracing::Level::DEBUG,
            types::Level::Info => tracing::Level::INFO,
            types::Level::Warn => tracing::Level::WARN,
            types::Level::Error => tracing::Level::ERROR,
        };
        self.logs
            .emit(level, truncate(&message, MAX_LOG_LINE_BYTES));
    }

    fn now_ms(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
            })
    }

    fn setting(&mut self, name: String) -> Option<String> {
        self.settings.get(&name).cloned()
    }

    fn metric_name(&mut self, id: u32) -> String {
        self.metrics
            .names
            .get(id as usize)
            .cloned()
            .unwrap_or_default()
    }
}

/// Denies memory and table growth past the sandbox's limits and remembers
/// that it did, so a failed call can be reported as out-of-memory.
struct MemoryLimiter {
    memory_limit_bytes: usize,
    denied: bool,
}

/// Maximum table elements per instance; tables hold function references.
const TABLE_LIMIT_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.memory_limit_bytes;
        self.denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= TABLE_LIMIT_ELEMENTS;
        self.denied |= !allowed;
        Ok(allowed)
    }
}

/// Export lookups resolved once at load time.
struct Exports {
    drift: Option<types::drift::GuestIndices>,
    sequencer: Option<types::sequencer::GuestIndices>,
    remediation: Option<types::remediation::GuestIndices>,
}

/// One live instance with its exports loaded.
struct Instance {
    store: Store<GuestState>,
    drift: Option<types::drift::Guest>,
    sequencer: Option<types::sequencer::Guest>,
    remediation: Option<types::remediation::Guest>,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
}

/// A policy implemented by a WebAssembly component.
pub struct WasmPolicy {
    name: String,
    digest: String,
    limits: SandboxLimits,
    pre: InstancePre<GuestState>,
    exports: Exports,
    logs: Arc<LogLimiter>,
    reused: Mutex<Option<Instance>>,
}

impl std::fmt::Debug for WasmPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmPolicy")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl WasmPolicy {
    /// Compiles and links a component. `name` identifies it in logs and errors.
    pub fn load(name: &str, bytes: &[u8], limits: SandboxLimits) -> Result<Self, LoadError> {
        let digest = super::digest(bytes);
        let component = compile(name, &digest, bytes)?;

        check_contract_version(name, &component)?;

        let mut linker: Linker<GuestState> = Linker::new(shared_engine());
        let link = |source| LoadError::Link {
            name: name.to_owned(),
            source,
        };
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(link)?;
        deny_blocking(&mut linker).map_err(link)?;
        types::Policy::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |state| state)
            .map_err(link)?;
        let pre = linker.instantiate_pre(&component).map_err(link)?;

        let exports = Exports {
            drift: types::drift::GuestIndices::new(&pre).ok(),
            sequencer: types::sequencer::GuestIndices::new(&pre).ok(),
            remediation: types::remediation::GuestIndices::new(&pre).ok(),
        };
        if exports.drift.is_none() && exports.sequencer.is_none() && exports.remediation.is_none() {
            return Err(LoadError::NoDecision {
                name: name.to_owned(),
            });
        }
        let logs = Arc::new(LogLimiter::new(name, limits.log_lines_per_second));
        let policy = Self {
            name: name.to_owned(),
            digest,
            limits,
            pre,
            exports,
            logs,
            reused: Mutex::new(None),
        };

        // Instantiating checks the exports' function types against the
        // contract, so a component built for another version of the WIT is
        // rejected now rather than at its first decision. Start-up code gets
        // a generous deadline; the instance is kept for reuse.
        let instance = policy
            .instantiate(&Arc::default(), STARTUP_DEADLINE)
            .map_err(|source| LoadError::Incompatible {
                name: name.to_owned(),
                source,
            })?;
        if policy.limits.reuse_instances {
            *policy.reused.lock().unwrap_or_else(PoisonError::into_inner) = Some(instance);
        }
        Ok(policy)
    }

    /// Returns the policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns `sha256:` and the hex digest of the component's bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Returns whether the component exports `decision`.
    pub fn implements(&self, decision: Decision) -> bool {
        match decision {
            Decision::Drift => self.exports.drift.is_some(),
            Decision::Sequencer => self.exports.sequencer.is_some(),
            Decision::Remediation => self.exports.remediation.is_some(),
        }
    }

    /// Runs the drift decision.
    pub fn assess(
        &self,
        settings: &Arc<Settings>,
        asset: &AssetStatus,
        comparisons: &[Comparison],
    ) -> Result<DriftAssessment, PolicyError> {
        self.call(Decision::Drift, settings, |instance| {
            match &instance.drift {
                Some(guest) => {
                    let wire = instance.store.data_mut().metrics.wire(comparisons);
                    guest
                        .call_assess(&mut instance.store, asset, &wire)
                        .map(Some)
                }
                None => Ok(None),
            }
        })
    }

    /// Runs the sequencer decision.
    pub fn next_plan(
        &self,
        settings: &Arc<Settings>,
        asset: &AssetStatus,
        profiles: &[ProfileInfo],
    ) -> Result<Option<LoadPlan>, PolicyError> {
        self.call(Decision::Sequencer, settings, |instance| {
            match &instance.sequencer {
                Some(guest) => guest
                    .call_next_plan(&mut instance.store, asset, profiles)
                    .map(Some),
                None => Ok(None),
            }
        })
    }

    /// Runs the remediation decision.
    pub fn decide(
        &self,
        settings: &Arc<Settings>,
        service: &ServiceStatus,
        assets: &[AssetStatus],
    ) -> Result<Vec<Action>, PolicyError> {
        self.call(
            Decision::Remediation,
            settings,
            |instance| match &instance.remediation {
                Some(guest) => guest
                    .call_decide(&mut instance.store, service, assets)
                    .map(Some),
                None => Ok(None),
            },
        )
    }

    /// Runs `body` on an instance under the call's deadline. `body` returns
    /// none when the instance lacks the export.
    fn call<R>(
        &self,
        decision: Decision,
        settings: &Arc<Settings>,
        body: impl FnOnce(&mut Instance) -> wasmtime::Result<Option<R>>,
    ) -> Result<R, PolicyError> {
        if !self.implements(decision) {
            return Err(PolicyError::NotImplemented {
                policy: self.name.clone(),
                decision,
            });
        }
        let mut slot = self.reused.lock().unwrap_or_else(PoisonError::into_inner);
        let mut instance = match slot.take() {
            Some(instance) if instance.store.data().metrics.names.len() < MAX_METRIC_NAMES => {
                instance
            }
            _ => self
                .instantiate(settings, self.limits.deadline())
                .map_err(|error| self.classify(decision, None, error))?,
        };
        instance.store.data_mut().settings = Arc::clone(settings);
        instance.store.data_mut().limiter.denied = false;
        instance
            .store
            .set_epoch_deadline(deadline_ticks(self.limits.deadline()));

        let result = body(&mut instance);
        self.drain_output(&instance);

        match result {
            Ok(Some(value)) => {
                if self.limits.reuse_instances {
                    *slot = Some(instance);
                }
                Ok(value)
            }
            Ok(None) => Err(PolicyError::NotImplemented {
                policy: self.name.clone(),
                decision,
            }),
            Err(error) => Err(self.classify(decision, Some(&instance), error)),
        }
    }

    fn instantiate(
        &self,
        settings: &Arc<Settings>,
        deadline: Duration,
    ) -> wasmtime::Result<Instance> {
        let stdout = CapturedOutput::default();
        let stderr = CapturedOutput::default();
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = GuestState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                memory_limit_bytes: self.limits.memory_limit_bytes,
                denied: false,
            },
            settings: Arc::clone(settings),
            logs: Arc::clone(&self.logs),
            metrics: MetricNames::default(),
        };
        let mut store = Store::new(shared_engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(deadline_ticks(deadline));
        store.epoch_deadline_trap();

        let instance = self.pre.instantiate(&mut store)?;
        let drift = self
            .exports
            .drift
            .as_ref()
            .map(|e| e.load(&mut store, &instance))
            .transpose()?;
        let sequencer = self
            .exports
            .sequencer
            .as_ref()
            .map(|e| e.load(&mut store, &instance))
            .transpose()?;
        let remediation = self
            .exports
            .remediation
            .as_ref()
            .map(|e| e.load(&mut store, &instance))
            .transpose()?;
        Ok(Instance {
            store,
            drift,
            sequencer,
            remediation,
            stdout,
            stderr,
        })
    }

    fn drain_output(&self, instance: &Instance) {
        let (bytes, dropped) = instance.stdout.take();
        self.logs.emit_output("stdout", &bytes, dropped);
        let (bytes, dropped) = instance.stderr.take();
        self.logs.emit_output("stderr", &bytes, dropped);
    }

    fn classify(
        &self,
        decision: Decision,
        instance: Option<&Instance>,
        error: wasmtime::Error,
    ) -> PolicyError {
        let policy = self.name.clone();
        if instance.is_some_and(|instance| instance.store.data().limiter.denied) {
            return PolicyError::OutOfMemory {
                policy,
                decision,
                limit_bytes: self.limits.memory_limit_bytes,
            };
        }
        if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return PolicyError::Timeout {
                policy,
                decision,
                deadline: self.limits.deadline(),
            };
        }
        PolicyError::Trap {
            policy,
            decision,
            source: error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::types::{Direction, Summary};

    fn named(metric: &str) -> Comparison {
        let summary = Summary {
            count: 1,
            median: 1.0,
            mean: 1.0,
            p90: 1.0,
            min: 1.0,
            max: 1.0,
        };
        Comparison {
            metric: metric.to_owned(),
            live: summary,
            shadow: summary,
            relative_change: 0.0,
            hl_shift: 0.0,
            p_value: 1.0,
            noise_floor: 0.0,
            direction: Direction::Either,
        }
    }

    #[test]
    fn metric_numbers_stay_fixed_as_names_arrive() {
        let mut names = MetricNames::default();
        let first = names.wire(&[named("cpu"), named("latency")]);
        let second = names.wire(&[named("errors"), named("cpu")]);
        let ids = |wire: &[WireComparison]| wire.iter().map(|c| c.metric).collect::<Vec<_>>();
        assert_eq!(ids(&first), vec![0, 1]);
        assert_eq!(ids(&second), vec![2, 0]);
        assert_eq!(names.names, vec!["cpu", "latency", "errors"]);
    }
}
