//! The wasmtime engines, the epoch ticker that drives timeouts and cancellation, and the
//! on-disk cache of precompiled components.
//!
//! wasmtime fixes the wasm stack limit per engine, so there is one engine per distinct
//! `wasm_stack` value in the policy (usually exactly one). A single ticker thread advances the
//! epoch of all of them.

use crate::config::policy::Policy;
use crate::core::units::ByteSize;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use wasmtime::component::Component;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Core instances a component may create. Rust components need 3; interpreters built with
/// componentize-py or -js need more.
pub const CORE_INSTANCES_PER_COMPONENT: u32 = 32;
/// Memories and tables a component instance may hold.
pub const MEMORIES_PER_COMPONENT: u32 = 8;
pub const TABLES_PER_COMPONENT: u32 = 16;
/// Bytes of each linear memory and table reset in place (kept resident) when a slot is reused.
const KEEP_RESIDENT: usize = 1 << 20;

/// The engines of one policy and the thread that ticks their epochs.
pub struct Engines {
    by_stack: Vec<(ByteSize, Engine)>,
    stop: Arc<AtomicBool>,
}

impl Engines {
    /// Build the engines a policy needs. Pools are sized for the server's in-flight limit plus
    /// the instances used while loading.
    pub fn new(policy: &Policy) -> Result<Engines> {
        let max_memory = policy
            .components
            .iter()
            .map(|c| c.limits.memory)
            .max()
            .unwrap_or(ByteSize::mib(64));
        let slots = policy.server.max_in_flight + 8;
        let mut by_stack: Vec<(ByteSize, Engine)> = Vec::new();
        for c in &policy.components {
            let stack = c.limits.wasm_stack;
            if by_stack.iter().all(|(s, _)| *s != stack) {
                by_stack.push((stack, build_engine(stack, max_memory, slots)?));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let engines: Vec<Engine> = by_stack.iter().map(|(_, e)| e.clone()).collect();
        let tick = policy.server.epoch_tick;
        let stop_flag = stop.clone();
        std::thread::Builder::new()
            .name("airlock-epoch".into())
            .spawn(move || {
                while !stop_flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    for e in &engines {
                        e.increment_epoch();
                    }
                }
            })
            .context("cannot start the epoch ticker thread")?;
        Ok(Engines { by_stack, stop })
    }

    /// The engine for a given wasm stack limit (one exists for every limit in the policy).
    pub fn for_stack(&self, stack: ByteSize) -> &Engine {
        &self
            .by_stack
            .iter()
            .find(|(s, _)| *s == stack)
            .expect("an engine is built for every wasm_stack in the policy")
            .1
    }
}

impl Drop for Engines {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn build_engine(stack: ByteSize, max_memory: ByteSize, slots: u32) -> Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(slots * MEMORIES_PER_COMPONENT)
        .total_tables(slots * TABLES_PER_COMPONENT)
        .total_stacks(slots)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(max_memory.as_usize())
        .max_unused_warm_slots(16)
        // Reset a slot's dirty pages with memset instead of madvise: madvise on a warm slot
        // flushes every core's TLB (an IPI per call, the largest single cost under load), and
        // the next call then faults the pages back in. pagemap_scan finds which pages the call
        // touched, so only those are cleared.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .concurrency_support(false)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(stack.as_usize())
        // The fiber stack must hold the wasm stack plus the host frames beneath it.
        .async_stack_size(stack.as_usize() + (1 << 20))
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("cannot create the wasmtime engine")
}

/// Compile `bytes`, or load the precompiled form from `cache_dir` when it was compiled before by
/// a compatible engine. The cache key is the component's sha256 and the engine's compatibility
/// hash; a cached file that no longer loads is recompiled and replaced.
pub fn load_component(
    engine: &Engine,
    bytes: &[u8],
    digest: &[u8; 32],
    cache_dir: &Path,
) -> Result<Component> {
    let path = cache_path(engine, digest, cache_dir);
    if path.is_file() {
        // SAFETY: the cache directory is created by airlock with mode 0700 and only airlock
        // writes to it; files are written whole and renamed into place. Anyone able to write
        // there could equally replace the airlock binary's state, so it is as trusted as the
        // state directory itself.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cached component unusable; recompiling")
            }
        }
    }
    let component = Component::new(engine, bytes)
        .map_err(anyhow::Error::from)
        .context("invalid component")?;
    match component.serialize() {
        Ok(compiled) => {
            if let Err(e) = write_atomically(&path, &compiled) {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the compile cache; continuing without it");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot serialise a compiled component"),
    }
    Ok(component)
}

fn cache_path(engine: &Engine, digest: &[u8; 32], cache_dir: &Path) -> PathBuf {
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    let engine_key = hex::encode(&h.0.finalize()[..8]);
    cache_dir.join(format!("{}-{engine_key}.cwasm", hex::encode(digest)))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Create `dir` (and parents) readable by this user only.
pub fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {} to mode 0700", dir.display()))?;
    }
    Ok(())
}
