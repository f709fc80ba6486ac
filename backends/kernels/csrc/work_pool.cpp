// The work-claiming pool of work_pool.h.
//
// One 64-bit job word: epoch (bits 32-63), back (16-31) and front (0-15): the job's unclaimed
// chunks are [front, back). The caller claims from the front (front + 1), helpers from the back
// (back - 1), so from one call to the next the caller runs about the same chunks and finds their
// data (a layer's packed weights) still in its own L2, and so does a single helper (with several,
// helpers race for the back); a late helper only moves the boundary. Within a job front only grows
// and back only shrinks, and a new job has a larger epoch, so the word never takes a value twice: a
// compare-exchange from a value read earlier succeeds only while that very job still has that
// chunk, and a helper that read a finished job's word, or an older one, can never claim a chunk of
// it or of a newer job. The job's function, context and chunk count are written before its epoch is
// published and read by a helper only after a successful claim and before it finishes that chunk,
// i.e. while the caller is still waiting for it.
// `done` counts the job's finished chunks (each thread adds the chunks it ran when it finds no
// chunk left); the caller waits until it reaches the chunk count, which needs only the chunks
// that were claimed, never a helper that has not started.
//
// A chunk that throws does not unwind past the pool: its exception (the first one) is kept,
// later chunks of the job are claimed but skipped, the caller waits for every claimed chunk as
// usual (no helper may still run on the caller's stack), releases the pool and rethrows.
#include "work_pool.h"

#include <ATen/Parallel.h>
#include <omp.h>
#include <pthread.h>

#include <atomic>
#include <cstdlib>
#include <ctime>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SRIGL_POOL_PAUSE() _mm_pause()
#else
#define SRIGL_POOL_PAUSE() std::this_thread::yield()
#endif

namespace srigl_pool {
namespace {

using ChunkFn = void (*)(void*, int64_t);
using Clock = std::chrono::steady_clock;

constexpr int64_t kMaxChunks = 0xffff;
// How long a helper spins after a job before it blocks (the next job of a layer sequence usually
// comes within microseconds; waking a blocked helper costs a futex call and a context switch).
// With a spare core the spin costs nothing, so 50 us. When the pool's threads already fill the
// machine (thread count >= hardware_concurrency(), the usual case: torch's default) every
// spinning helper takes a core from the caller, from the other extensions' pools (fused, dense,
// conv: three pools) and from torch's OpenMP workers, so it spins only 10 us.
constexpr auto kHelperSpin = std::chrono::microseconds(50);
constexpr auto kHelperSpinOversubscribed = std::chrono::microseconds(10);
// How long the caller spins for chunks that helpers claimed and still run before it blocks
// (a helper that was descheduled inside its chunk needs a time slice, far longer than this).
constexpr auto kCallerSpin = std::chrono::microseconds(20);
constexpr uint64_t kClockEvery = 64;  // spin iterations between two clock reads

uint64_t word_of(uint32_t epoch, uint32_t back, uint32_t front) {
  return (uint64_t(epoch) << 32) | (uint64_t(back) << 16) | front;
}
uint32_t epoch_of(uint64_t w) { return uint32_t(w >> 32); }
uint32_t back_of(uint64_t w) { return uint32_t(w >> 16) & 0xffff; }
uint32_t front_of(uint64_t w) { return uint32_t(w) & 0xffff; }
constexpr uint64_t kBackOne = uint64_t(1) << 16;

// The words every thread touches per job each have their own cache line: the job word (claims),
// `done` (chunk completions), and the flags that the caller and helpers poll while spinning.
struct Pool {
  alignas(64) std::atomic<uint64_t> word{0};
  // The newest published epoch, on its own line: what spinning helpers poll. Polling `word`
  // itself kept that line shared between the cores, so every claim of the caller (a
  // compare-exchange) first had to take it back from the spinning helper.
  alignas(64) std::atomic<uint32_t> latest{0};
  alignas(64) std::atomic<int64_t> done{0};
  alignas(64) std::atomic<bool> caller_sleeping{false};  // the caller blocks on `done`
  alignas(64) std::atomic<int> sleepers{0};              // helpers blocked on cv
  alignas(64) std::atomic<int> spinners{0};              // helpers spinning for a job
  alignas(64) std::atomic<bool> busy{false};  // a caller holds the pool (a second one: serial)
  std::atomic<bool> stop{false};              // helpers exit (resize)
  std::atomic<bool> failed{false};            // a chunk of the current job threw
  std::atomic<ChunkFn> fn{nullptr};
  std::atomic<void*> ctx{nullptr};
  std::atomic<int64_t> count{0};  // chunks of the current job
  std::mutex m;
  std::condition_variable cv;
  std::mutex error_m;
  std::exception_ptr error;  // the first exception of the current job (under error_m)
  // Set by resize() while no helper runs (before the helpers start: thread creation orders them).
  std::chrono::microseconds helper_spin{kHelperSpin};
  int max_spinners = 0;              // never more spinning helpers than cores - 1
  std::vector<std::thread> helpers;  // touched only by the caller holding `busy`
  std::atomic<int64_t> parallel_jobs{0}, busy_serial_jobs{0}, helper_chunks{0};
};

std::atomic<Pool*> g_pool{nullptr};  // never freed: helpers may outlive any static destructor
std::atomic<int64_t> g_helper_delay_us{0};
std::atomic<int64_t> g_helper_chunk_delay_us{0};  // test hook: helpers sleep inside a chunk
std::atomic<bool> g_fail_spawn{false};  // test hook: the next resize fails to start a thread

void keep_first_error(Pool& p) {
  std::lock_guard<std::mutex> lock(p.error_m);
  if (!p.error) p.error = std::current_exception();
  p.failed.store(true, std::memory_order_relaxed);
}

// Claims and runs chunks of epoch `epoch` until none is left, from the front (the caller) or
// the back (helpers); returns how many it ran. A chunk that throws is recorded
// (keep_first_error) and the job's later chunks are claimed unrun.
int64_t claim_and_run(Pool& p, uint32_t epoch, bool from_back) {
  int64_t ran = 0, taken = 0, count = 0;
  uint64_t w = p.word.load(std::memory_order_acquire);
  while (epoch_of(w) == epoch && front_of(w) < back_of(w)) {
    const uint64_t claimed = from_back ? w - kBackOne : w + 1;
    if (!p.word.compare_exchange_weak(w, claimed, std::memory_order_acq_rel,
                                      std::memory_order_acquire))
      continue;  // w now holds the current word
    const int64_t chunk = from_back ? int64_t(back_of(w)) - 1 : int64_t(front_of(w));
    if (from_back) {  // test hook: a helper descheduled inside its chunk
      const int64_t delay = g_helper_chunk_delay_us.load(std::memory_order_relaxed);
      if (delay > 0) std::this_thread::sleep_for(std::chrono::microseconds(delay));
    }
    count = p.count.load(std::memory_order_relaxed);  // this job's, until done
    if (!p.failed.load(std::memory_order_relaxed)) {
      try {
        p.fn.load(std::memory_order_relaxed)(p.ctx.load(std::memory_order_relaxed), chunk);
        ++ran;
      } catch (...) {
        keep_first_error(p);
      }
    }
    ++taken;
    w = p.word.load(std::memory_order_acquire);
  }
  // One completion count per thread and job, not per chunk (`done` is a cache line both cores
  // write: per chunk it moved between them at every chunk). seq_cst, paired with the caller's
  // store of caller_sleeping: one side sees the other.
  if (taken > 0 && p.done.fetch_add(taken) + taken == count && p.caller_sleeping.load())
    p.done.notify_all();
  return ran;
}

// Waits (spinning at most helper_spin, then blocked) until a job newer than `seen` is published
// or the pool stops; returns false on stop.
bool wait_for_job(Pool& p, uint32_t seen) {
  auto fresh = [&] { return p.latest.load(std::memory_order_acquire) != seen; };
  if (p.spinners.fetch_add(1, std::memory_order_relaxed) < p.max_spinners) {
    const auto until = Clock::now() + p.helper_spin;
    for (uint64_t i = 0;; ++i) {
      if (p.stop.load(std::memory_order_acquire) || fresh()) break;
      SRIGL_POOL_PAUSE();
      if (i % kClockEvery == kClockEvery - 1 && Clock::now() > until) break;
    }
  }
  p.spinners.fetch_sub(1, std::memory_order_relaxed);
  if (p.stop.load(std::memory_order_acquire)) return false;
  if (fresh()) return true;
  std::unique_lock<std::mutex> lock(p.m);
  p.sleepers.fetch_add(1);  // seq_cst, paired with publish(): one side sees the other
  p.cv.wait(lock, [&] { return p.stop.load() || p.latest.load() != seen; });
  p.sleepers.fetch_sub(1);
  return !p.stop.load();
}

void helper_main(Pool* p) {
  uint32_t seen = p->latest.load(std::memory_order_acquire);
  while (wait_for_job(*p, seen)) {
    seen = p->latest.load(std::memory_order_acquire);  // stored after its job's word
    const int64_t delay = g_helper_delay_us.load(std::memory_order_relaxed);
    if (delay > 0) std::this_thread::sleep_for(std::chrono::microseconds(delay));
    const int64_t ran = claim_and_run(*p, seen, true);
    if (ran) p->helper_chunks.fetch_add(ran, std::memory_order_relaxed);
  }
}

// Makes the helper count `want` (the caller holds `busy`, so no job is running). Throws
// std::system_error when a thread cannot be started (the helpers started so far stay; the
// next resize joins them).
void resize(Pool& p, size_t want) {
  if (p.helpers.size() == want) return;
  if (!p.helpers.empty()) {
    p.stop.store(true);
    { std::lock_guard<std::mutex> lock(p.m); }
    p.cv.notify_all();
    for (auto& t : p.helpers) t.join();
    p.helpers.clear();
    p.stop.store(false);
  }
  const int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
  p.helper_spin = int64_t(want) + 1 >= cores ? kHelperSpinOversubscribed : kHelperSpin;
  p.max_spinners = static_cast<int>(cores - 1);
  for (size_t i = 0; i < want; ++i) {
    if (g_fail_spawn.exchange(false))
      throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                              "work pool test hook: thread not started");
    p.helpers.emplace_back(helper_main, &p);
  }
}

void publish(Pool& p, uint32_t n, ChunkFn fn, void* ctx) {
  const uint32_t epoch = epoch_of(p.word.load(std::memory_order_relaxed)) + 1;
  p.fn.store(fn, std::memory_order_relaxed);
  p.ctx.store(ctx, std::memory_order_relaxed);
  p.count.store(n, std::memory_order_relaxed);
  p.done.store(0, std::memory_order_relaxed);
  p.word.store(word_of(epoch, n, 0));  // seq_cst: release for the fields above
  p.latest.store(epoch);                // seq_cst, paired with wait_for_job's sleepers
  if (p.sleepers.load() > 0) {
    { std::lock_guard<std::mutex> lock(p.m); }
    p.cv.notify_all();
  }
}

// Waits until all `n` chunks of the job are done: spins kCallerSpin, then blocks on `done` (the
// helper that finishes the last chunk wakes it).
void wait_done(Pool& p, int64_t n) {
  const auto until = Clock::now() + kCallerSpin;
  for (uint64_t i = 0; p.done.load(std::memory_order_acquire) < n; ++i) {
    SRIGL_POOL_PAUSE();
    if (i % kClockEvery == kClockEvery - 1 && Clock::now() > until) {
      p.caller_sleeping.store(true);  // seq_cst, paired with claim_and_run()
      for (int64_t d; (d = p.done.load()) < n;) p.done.wait(d);
      p.caller_sleeping.store(false, std::memory_order_relaxed);
      return;
    }
  }
}

// In a forked child the parent's helpers do not exist, and neither do the OpenMP team's
// threads: libgomp's pool state still names them, so a parallel region would wait at its
// barrier forever. The child gets a fresh pool and never uses the team.
std::atomic<bool> g_forked_child{false};
void in_forked_child() {
  g_pool.store(nullptr);
  g_forked_child.store(true);
}
void register_fork_handler() {
  static const int registered = pthread_atfork(nullptr, nullptr, in_forked_child);
  (void)registered;
}

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return *p;
  register_fork_handler();
  Pool* made = new Pool();
  if (!g_pool.compare_exchange_strong(p, made)) {
    delete made;  // another thread made one first (no helpers started yet)
    return *p;
  }
  return *made;
}

void run_serial(int64_t nchunks, ChunkFn fn, void* ctx) {
  for (int64_t c = 0; c < nchunks; ++c) fn(ctx, c);
}

}  // namespace

int threads() { return at::get_num_threads(); }

// SRIGL_PARALLEL (read once per process): "pool", "team", or "auto" (unset, or any other
// value: auto).
enum class Mode { kPool, kTeam, kAuto };

std::atomic<int> g_mode{-1};  // a Mode, -1 until the environment was read

Mode parallel_mode() {
  int m = g_mode.load(std::memory_order_relaxed);
  if (m < 0) {
    const char* v = std::getenv("SRIGL_PARALLEL");
    const std::string s = v ? v : "";
    m = static_cast<int>(s == "pool" ? Mode::kPool : s == "team" ? Mode::kTeam : Mode::kAuto);
    int unset = -1;
    if (!g_mode.compare_exchange_strong(unset, m)) m = unset;  // set meanwhile: that one
  }
  return static_cast<Mode>(m);
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// The calling thread's CPU time (ns); -1 where the OS cannot say. A system call (~0.5 us in
// this VM), so auto mode reads it only around jobs that follow a slow one.
int64_t thread_cpu_ns() {
  timespec t;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t) != 0) return -1;
  return int64_t(t.tv_sec) * 1000000000 + t.tv_nsec;
}

// Auto mode: a job is late when its caller waited at the end longer than kLateNs and either no
// other thread ran a chunk (the OS had not scheduled it: another process holds the core) or the
// wait exceeds two of the caller's own chunk times (is_late). On the team that is a wait at
// the end barrier; on the pool, a wait for a chunk a helper claimed and was then descheduled
// in (the caller cannot take that chunk over). Late waits are summed over a window that a late job
// starts; once they exceed kLateBudgetNs within kWindowNs, the next state runs jobs for
// kFallbackNs: late team jobs -> the pool, late pool jobs -> serial on the caller (with fewer
// free cores than threads, a job that waits for no other thread is the fastest), then the team
// is tried again. Under load a helper descheduled for a scheduler tick (ms) in most jobs moves
// on within a few jobs; a VM's occasional ms-long stall of a quiet machine, or a single wait of
// a few ms, does not (nor does a team job larger than any before it in this process: libgomp
// starts its threads then; a count of 16 warm-up jobs instead let a process that started under
// load wait 8 ms a job for its first 16 jobs, the first 4 blocks of a batch-1 bench cell).
// A team job that follows one longer than kSlowJobNs also reads the caller's CPU time: wall time
// it spent without the CPU beyond kDescheduledNs counts late too (the caller itself lost the
// core inside its chunks, e.g. to torch's OpenMP worker spinning beside another process; it
// waited for nobody, so the wait alone never showed it: batch-1 bench cells under load ran
// 5-8 ms a call for their first blocks).
constexpr int64_t kLateNs = 100000;          // 100 us
constexpr int64_t kWindowNs = 100000000;     // 100 ms
constexpr int64_t kLateBudgetNs = 10000000;  // 10 ms of late waits per window
constexpr int64_t kFallbackNs = 1000000000;  // 1 s
constexpr int64_t kSlowJobNs = 500000;      // a team job this long: watch the next one's CPU
constexpr int64_t kDescheduledNs = 1000000;  // wall time without CPU that counts late (1 ms)
std::atomic<int> g_team_max_size{1};         // the largest team a job of this process ran

// Whether a team job of `nt` threads may start threads of libgomp (larger than any before):
// such a job's wait is not another process's doing, and never counts late.
bool starts_team_threads(int nt) {
  int seen = g_team_max_size.load(std::memory_order_relaxed);
  while (nt > seen)
    if (g_team_max_size.compare_exchange_weak(seen, nt, std::memory_order_relaxed)) return true;
  return false;
}

// `busy`: the caller's time running its `mine` chunks; `others_ran`: chunks other threads ran.
// A wait of up to two of the caller's chunk times is the job's own imbalance (a helper that
// claimed the last chunk just before the caller ran out), not a descheduled thread.
bool is_late(int64_t waited, int64_t busy, int64_t mine, int64_t others_ran) {
  if (waited <= kLateNs) return false;
  return others_ran == 0 || waited > 2 * busy / std::max<int64_t>(mine, 1);
}

// The late waits of one kind of job (team or pool) over the current window.
struct LateWindow {
  std::atomic<int64_t> start{0}, sum{0};
  // Adds a late wait of `waited` ns ending at `now`; true when the window's late waits passed
  // kLateBudgetNs (the window then restarts).
  bool add(int64_t waited, int64_t now) {
    int64_t s = start.load(std::memory_order_relaxed);
    if (now - s > kWindowNs) {
      start.store(now, std::memory_order_relaxed);
      sum.store(0, std::memory_order_relaxed);
      s = now;
    }
    const int64_t total = sum.fetch_add(waited, std::memory_order_relaxed) + waited;
    if (total <= kLateBudgetNs) return false;
    reset();
    return true;
  }
  void reset() {
    sum.store(0, std::memory_order_relaxed);
    start.store(0, std::memory_order_relaxed);
  }
};

LateWindow g_team_window, g_pool_window;

// Auto mode's pool jobs in groups of kAloneGroup: when in a group at least kAloneMin ran every
// chunk on the caller (no helper got a core in time), jobs run serially for kFallbackNs. Such a
// helper only costs the caller a wake-up per job (a futex call, and a woken thread that may
// take the caller's own core): with one busy process on 2 cores, batch-1 layers ran 1.2-1.9x
// slower on the pool than serially (dev, `python -m suite.bench under-load`).
constexpr int64_t kAloneGroup = 32;
constexpr int64_t kAloneMin = 24;
std::atomic<int64_t> g_group_jobs{0}, g_group_alone{0};

// Counts a pool job of auto mode (`alone`: the caller ran every chunk); true when its group is
// full and mostly alone (the group then restarts).
bool pool_mostly_alone(bool alone) {
  const int64_t a = alone ? g_group_alone.fetch_add(1, std::memory_order_relaxed) + 1
                          : g_group_alone.load(std::memory_order_relaxed);
  if (g_group_jobs.fetch_add(1, std::memory_order_relaxed) + 1 < kAloneGroup) return false;
  g_group_jobs.store(0, std::memory_order_relaxed);
  g_group_alone.store(0, std::memory_order_relaxed);
  return a >= kAloneMin;
}

std::atomic<int64_t> g_team_off_until{0};    // now_ns() before which auto jobs use the pool
std::atomic<int64_t> g_serial_until{0};      // now_ns() before which auto jobs run serially
std::atomic<int64_t> g_team_jobs{0}, g_team_late{0};
std::atomic<int64_t> g_auto_serial_jobs{0}, g_pool_late{0};

// SRIGL_PARALLEL=team (and auto, while no team job came late): the chunks are claimed by an
// OpenMP team, i.e. torch's own libgomp threads. Each team thread has a home range of the chunks
// (split: thread t's share, as a static schedule would give it) and claims from it first, then
// from the other threads' ranges in turn (one atomic counter per range): from one call to the
// next a thread runs the same chunks and finds their data (a layer's packed weights) in its own
// L2, and a thread that comes late only loses chunks to the others. (One counter for all, claimed
// in order, gave each thread a different mix every call: 3072->768 at 90% and batch 1, whose
// pack fits two L2s but not one, ran 1.7x slower than the C probe's static split.) Inside a
// whole model the kernels then share torch's threads instead of competing with them for the
// cores (a pool
// helper woken while torch's worker spins after its own op gets the core only when the OS
// preempts that worker); the price is the team's end barrier, which waits for a thread the OS
// has not scheduled. Returns how long the caller waited at the end barrier (ns), and the time
// it ran chunks in *busy_ns.
int64_t run_team(int64_t nchunks, ChunkFn fn, void* ctx, int nt, int64_t* busy_ns,
                 int64_t* others_ran) {
  struct alignas(64) Range {
    std::atomic<int64_t> next{0};
    int64_t end = 0;
  };
  constexpr int kLocalRanges = 8;
  Range local[kLocalRanges];
  std::unique_ptr<Range[]> heap(nt > kLocalRanges ? new Range[nt] : nullptr);
  Range* ranges = heap ? heap.get() : local;
  for (int t = 0; t < nt; ++t) {
    int64_t lo, hi;
    split(nchunks, nt, t, &lo, &hi);
    ranges[t].next.store(lo, std::memory_order_relaxed);
    ranges[t].end = hi;
  }
  std::atomic<int64_t> others{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_m;
  const int64_t delay = g_helper_delay_us.load(std::memory_order_relaxed);
  const int64_t start = now_ns();
  int64_t caller_done = start;
#pragma omp parallel num_threads(nt)
  {
    const int me = omp_get_thread_num();
    const bool caller = me == 0;
    if (!caller && delay > 0) std::this_thread::sleep_for(std::chrono::microseconds(delay));
    // home range first, then every other range in turn (so a team smaller than asked for, or a
    // thread that comes late, still leaves no chunk unclaimed)
    for (int q = 0; q < nt; ++q) {
      Range& r = ranges[(me + q) % nt];
      for (;;) {
        const int64_t c = r.next.fetch_add(1, std::memory_order_relaxed);
        if (c >= r.end) break;
        if (failed.load(std::memory_order_relaxed)) continue;  // skip the rest after a throw
        try {
          fn(ctx, c);
        } catch (...) {  // no exception may leave an OpenMP region
          std::lock_guard<std::mutex> lock(error_m);
          if (!error) error = std::current_exception();
          failed.store(true, std::memory_order_relaxed);
        }
        if (!caller) others.fetch_add(1, std::memory_order_relaxed);
      }
    }
    if (caller) caller_done = now_ns();
  }
  const int64_t end = now_ns();
  g_team_jobs.fetch_add(1, std::memory_order_relaxed);
  if (busy_ns) *busy_ns = caller_done - start;
  if (others_ran) *others_ran = others.load(std::memory_order_relaxed);
  if (error) std::rethrow_exception(error);
  return end - caller_done;
}

void run_chunks(int64_t nchunks, ChunkFn fn, void* ctx) {
  const int nt = nchunks > 1 ? threads() : 1;
  if (nt <= 1 || nchunks > kMaxChunks) return run_serial(nchunks, fn, ctx);
  register_fork_handler();
  // a forked child: the pool (see in_forked_child)
  const Mode mode = g_forked_child.load(std::memory_order_relaxed) ? Mode::kPool : parallel_mode();
  if (mode == Mode::kTeam) {
    starts_team_threads(nt);  // (tracked for auto mode)
    run_team(nchunks, fn, ctx, nt, nullptr, nullptr);
    return;
  }
  const bool automatic = mode == Mode::kAuto;
  if (automatic) {
    const int64_t now = now_ns();
    if (now < g_serial_until.load(std::memory_order_relaxed)) {
      g_auto_serial_jobs.fetch_add(1, std::memory_order_relaxed);
      return run_serial(nchunks, fn, ctx);
    }
    if (now >= g_team_off_until.load(std::memory_order_relaxed)) {
      // after a slow team job of this thread, the next one also reads the thread's CPU time:
      // a caller that lost the core inside its own chunks (a third runnable thread, e.g. an
      // OpenMP worker spinning beside another process) is slow without waiting for anyone
      static thread_local bool watch_cpu = false;
      const int64_t cpu0 = watch_cpu ? thread_cpu_ns() : -1;
      int64_t busy = 0, others_ran = 0;
      const bool warm = !starts_team_threads(nt);
      const int64_t waited = run_team(nchunks, fn, ctx, nt, &busy, &others_ran);
      const int64_t end = now_ns();
      const bool waited_late = warm && is_late(waited, busy, nchunks - others_ran, others_ran);
      int64_t late_ns = waited_late ? waited : 0;
      if (cpu0 >= 0 && warm) {
        const int64_t cpu1 = thread_cpu_ns();
        const int64_t lost = (end - now) - (cpu1 - cpu0);  // wall time without the CPU
        if (cpu1 >= 0 && lost > kDescheduledNs) late_ns = std::max(late_ns, lost);
      }
      watch_cpu = end - now > kSlowJobNs;
      if (late_ns > 0) {
        g_team_late.fetch_add(1, std::memory_order_relaxed);
        if (g_team_window.add(late_ns, end))
          g_team_off_until.store(end + kFallbackNs, std::memory_order_relaxed);
      }
      return;
    }
  }
  Pool& p = pool();
  if (p.busy.exchange(true, std::memory_order_acquire)) {
    p.busy_serial_jobs.fetch_add(1, std::memory_order_relaxed);
    return run_serial(nchunks, fn, ctx);
  }
  try {
    resize(p, static_cast<size_t>(nt - 1));
  } catch (const std::exception&) {  // no thread could be started: this job runs serially
    p.busy_serial_jobs.fetch_add(1, std::memory_order_relaxed);
    p.busy.store(false, std::memory_order_release);
    return run_serial(nchunks, fn, ctx);
  }
  const int64_t start = automatic ? now_ns() : 0;
  publish(p, static_cast<uint32_t>(nchunks), fn, ctx);
  const int64_t mine = claim_and_run(p, epoch_of(p.word.load(std::memory_order_relaxed)), false);
  const int64_t caller_done = automatic ? now_ns() : 0;
  wait_done(p, nchunks);  // after it no helper touches fn or ctx of this job
  std::exception_ptr error;
  if (p.failed.load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(p.error_m);
    error = std::move(p.error);
    p.error = nullptr;
    p.failed.store(false, std::memory_order_relaxed);
  }
  p.parallel_jobs.fetch_add(1, std::memory_order_relaxed);
  p.busy.store(false, std::memory_order_release);
  if (automatic) {
    const int64_t end = now_ns(), waited = end - caller_done;
    bool serial_next = pool_mostly_alone(mine == nchunks);
    if (is_late(waited, caller_done - start, mine, nchunks - mine)) {
      g_pool_late.fetch_add(1, std::memory_order_relaxed);
      serial_next = g_pool_window.add(waited, end) || serial_next;
    }
    if (serial_next) g_serial_until.store(end + kFallbackNs, std::memory_order_relaxed);
  }
  if (error) std::rethrow_exception(error);
}

std::vector<int64_t> stats() {
  Pool& p = pool();
  const bool held = p.busy.exchange(true, std::memory_order_acquire);
  const int64_t helpers = held ? -1 : static_cast<int64_t>(p.helpers.size());
  if (!held) p.busy.store(false, std::memory_order_release);
  return {helpers,           p.parallel_jobs.load(),   p.busy_serial_jobs.load(),
          p.helper_chunks.load(), g_team_jobs.load(),    g_team_late.load(),
          g_pool_late.load(),     g_auto_serial_jobs.load()};
}

int64_t set_parallel_mode(int64_t mode) {
  const int old = static_cast<int>(parallel_mode());
  if (mode >= 0 && mode <= 2) {
    g_mode.store(static_cast<int>(mode));
    g_team_off_until.store(0);  // auto starts afresh: on the team, no late wait counted
    g_serial_until.store(0);
    g_team_window.reset();
    g_pool_window.reset();
    g_group_jobs.store(0);
    g_group_alone.store(0);
  }
  return old;
}

int64_t set_helper_delay_us(int64_t us) { return g_helper_delay_us.exchange(us < 0 ? 0 : us); }

int64_t set_helper_chunk_delay_us(int64_t us) {
  return g_helper_chunk_delay_us.exchange(us < 0 ? 0 : us);
}

bool test_fail_next_spawn(bool on) { return g_fail_spawn.exchange(on); }

int64_t test_chunks(int64_t nchunks, int64_t throw_chunk, int64_t sleep_us) {
  struct Ctx {
    int64_t throw_chunk, sleep_us;
    std::thread::id caller;
    std::atomic<int64_t> ran{0};
  } ctx{throw_chunk, sleep_us, std::this_thread::get_id()};
  run_chunks(nchunks, [](void* v, int64_t c) {
    Ctx& s = *static_cast<Ctx*>(v);
    if (s.sleep_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(s.sleep_us));
    const bool helper = std::this_thread::get_id() != s.caller;
    if (c == s.throw_chunk || (s.throw_chunk == -2 && helper))
      throw std::runtime_error("work pool test: chunk " + std::to_string(c) + " failed on the " +
                               (helper ? "helper" : "caller"));
    s.ran.fetch_add(1, std::memory_order_relaxed);
  }, &ctx);
  return ctx.ran.load();
}

}  // namespace srigl_pool
