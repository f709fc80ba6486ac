// A small work-claiming parallel-for for the kernels of this extension (used instead of
// `#pragma omp parallel`, whose end barrier makes the caller wait for every team thread: on a
// loaded machine a helper the OS has not scheduled costs the caller a time slice per call).
//
// Persistent helper threads (torch's intra-op thread count - 1) and the calling thread claim
// the chunks of a job from one atomic word, the caller from the front and the helpers from the
// back (each thread keeps its part of a layer's data in its own cache from call to call). The
// caller runs chunks itself and at the end
// waits only for chunks a helper has already claimed (in progress); a helper that wakes late
// finds no chunk left and goes back to sleep, so a job completes on the caller alone when no
// helper comes. Helpers spin briefly after a job, then block; the caller spins briefly for
// claimed chunks, then blocks until the last one is done. The pool is resized when torch's
// thread count changes (if a thread cannot be started, the job runs serially), a second
// concurrent caller (another Python thread) runs its job serially, and a forked child starts
// with a fresh pool.
//
// Each extension that compiles work_pool.cpp has its own pool (hidden symbols).
//
// SRIGL_PARALLEL (read once per process) picks where the chunks run:
// - "team": an OpenMP team (torch's libgomp threads): fast inside whole models on a quiet
//   machine, where the kernels and torch's own ops then share one set of threads (a pool helper
//   woken while torch's worker spins after its op gets the core only when the OS preempts that
//   worker: measured 2x slower linears inside ViT-B/16), and slow on a loaded one (the team's
//   end barrier waits for a thread the OS has not scheduled);
// - "pool": the pool, always;
// - "auto" (unset, the default): the team until late team jobs (the caller waited at the end
//   barrier > 100 us for a thread that ran no chunk, or for longer than two of its own chunks took)
//   add up to more than 10 ms within 100 ms, then the pool for 1 s; if pool jobs come late the same
//   way (the caller waited for a chunk that a helper claimed and was then descheduled in), or the
//   caller ran every chunk alone in 24 of 32 pool jobs (no helper got a core in time: it only cost
//   a wake-up), serial jobs on the caller for 1 s; then the team is tried again. Under load (a
//   helper descheduled for a scheduler tick in most jobs) it moves on within a few jobs; a VM's
//   occasional ms-long stall does not move it (nor does a team job larger than any before it
//   in the process, which starts libgomp's threads). After a team job longer than 0.5 ms the
//   next one also reads the caller's CPU time: over 1 ms of wall time without CPU counts late
//   (the caller lost its core inside its own chunks). With one other busy process on a 2-core
//   machine small (batch-1) jobs settle on serial, which waits for no other thread; large ones
//   mostly run on the pool, whose helper still gets some of the second core.
// A forked child always uses (a fresh) pool: the OpenMP team's threads are not in it.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace srigl_pool __attribute__((visibility("hidden"))) {

// Chunks per thread of a parallel loop: enough that the caller finishes the job alone with
// small steps when a helper never comes, few enough that claiming costs nothing.
constexpr int64_t kChunksPerThread = 4;

// Part `part` of [0, total) cut into `parts` near-equal contiguous parts: [*lo, *hi).
inline void split(int64_t total, int64_t parts, int64_t part, int64_t* lo, int64_t* hi) {
  const int64_t q = total / parts, r = total % parts;
  *lo = part * q + (part < r ? part : r);
  *hi = *lo + q + (part < r ? 1 : 0);
}

// The intra-op thread count of the calling thread (torch's, at::get_num_threads()).
int threads();

// Runs fn(ctx, c) once for every c in [0, nchunks), on the caller and the pool's helpers;
// returns when all have run. Serial when nchunks <= 1, torch has one thread, or another
// thread's job holds the pool. If fn throws, the first exception is rethrown on the caller once
// every chunk already started has finished (chunks not started by then are skipped), and the
// pool stays usable.
void run_chunks(int64_t nchunks, void (*fn)(void* ctx, int64_t chunk), void* ctx);

// body(lo, hi) over [0, units) in contiguous ranges: one range (serial, no pool) unless
// `parallel` and torch has more than one thread; else min(units, kChunksPerThread * threads)
// chunks run by the pool.
template <class Body>
void parallel_ranges(int64_t units, bool parallel, const Body& body) {
  if (units <= 0) return;
  const int nt = parallel ? threads() : 1;
  const int64_t nchunks = nt > 1 ? std::min<int64_t>(units, kChunksPerThread * nt) : 1;
  if (nchunks <= 1) {
    body(int64_t(0), units);
    return;
  }
  struct Ctx {
    const Body* body;
    int64_t units, nchunks;
  } ctx{&body, units, nchunks};
  run_chunks(nchunks, [](void* p, int64_t c) {
    const Ctx& s = *static_cast<const Ctx*>(p);
    int64_t lo, hi;
    split(s.units, s.nchunks, c, &lo, &hi);
    (*s.body)(lo, hi);
  }, &ctx);
}

// Where this extension's jobs run from now on: 0 pool, 1 team, 2 auto (SRIGL_PARALLEL's
// values; another value changes nothing; auto starts afresh, on the team); returns the previous
// one.
int64_t set_parallel_mode(int64_t mode);

// Test and measurement hooks. Stats of this process's pool since it was made:
// {helpers, parallel pool jobs, serial jobs (busy pool or no thread started), chunks run by
//  helpers, team jobs, late team jobs (auto mode then used the pool for a while), late pool jobs
//  of auto mode (it then ran jobs serially for a while), jobs auto mode ran serially}.
std::vector<int64_t> stats();
// Helpers (and a team's threads other than the caller) sleep `us` microseconds after waking
// for a job, before claiming (tests: the caller must finish alone, a late team is seen);
// returns the previous value.
int64_t set_helper_delay_us(int64_t us);
// Helpers sleep `us` microseconds after claiming a chunk, before running it (tests: a helper
// descheduled inside its chunk, which the caller must wait for); returns the previous value.
int64_t set_helper_chunk_delay_us(int64_t us);
// Tests: when `on`, the next resize fails to start a helper thread (as std::thread does when
// the system has no thread left); returns the previous value.
bool test_fail_next_spawn(bool on);
// Tests: runs `nchunks` chunks on the pool, each sleeping `sleep_us` first; chunk `throw_chunk`
// throws std::runtime_error (-2: every chunk run by a helper throws; -1: none). Returns the
// number of chunks that ran to the end.
int64_t test_chunks(int64_t nchunks, int64_t throw_chunk, int64_t sleep_us);

}  // namespace srigl_pool
