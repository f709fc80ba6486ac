// The work-claiming pool of work_pool.h.
//
// One 64-bit job word: epoch (bits 32-63), chunk count (16-31), next unclaimed chunk (0-15).
// The word only grows (a new job has a larger epoch, a claim adds one), so a compare-exchange
// from a value read earlier succeeds only while that very job still has that chunk: a helper
// that read a finished job's word, or an older one, can never claim a chunk of it or of a newer
// job. The job's function and context are written before its epoch is published and read by a
// helper only after a successful claim, i.e. while the caller is still waiting for that chunk.
// `done` counts the job's finished chunks; the caller waits until it reaches the chunk count,
// which needs only the chunks that were claimed, never a helper that has not started.
#include "work_pool.h"

#include <ATen/Parallel.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
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
constexpr auto kHelperSpin = std::chrono::microseconds(50);  // then the helper blocks
constexpr int kCallerSpins = 4096;  // pause iterations before the caller yields

uint64_t word_of(uint32_t epoch, uint32_t n, uint32_t next) {
  return (uint64_t(epoch) << 32) | (uint64_t(n) << 16) | next;
}
uint32_t epoch_of(uint64_t w) { return uint32_t(w >> 32); }
uint32_t count_of(uint64_t w) { return uint32_t(w >> 16) & 0xffff; }
uint32_t next_of(uint64_t w) { return uint32_t(w) & 0xffff; }

struct Pool {
  std::atomic<uint64_t> word{0};
  std::atomic<ChunkFn> fn{nullptr};
  std::atomic<void*> ctx{nullptr};
  std::atomic<uint32_t> done{0};
  std::atomic<bool> busy{false};  // a caller holds the pool (a second one runs serially)
  std::atomic<bool> stop{false};  // helpers exit (resize)
  std::atomic<int> sleepers{0};   // helpers blocked on cv
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::thread> helpers;  // touched only by the caller holding `busy`
  std::atomic<int64_t> parallel_jobs{0}, busy_serial_jobs{0}, helper_chunks{0};
};

std::atomic<Pool*> g_pool{nullptr};  // never freed: helpers may outlive any static destructor
std::atomic<int64_t> g_helper_delay_us{0};

// Claims and runs chunks of epoch `epoch` until none is left; returns how many it ran.
int64_t claim_and_run(Pool& p, uint32_t epoch) {
  int64_t ran = 0;
  uint64_t w = p.word.load(std::memory_order_acquire);
  while (epoch_of(w) == epoch && next_of(w) < count_of(w)) {
    if (!p.word.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire))
      continue;  // w now holds the current word
    p.fn.load(std::memory_order_relaxed)(p.ctx.load(std::memory_order_relaxed), next_of(w));
    p.done.fetch_add(1, std::memory_order_release);
    ++ran;
    w = p.word.load(std::memory_order_acquire);
  }
  return ran;
}

// Waits (spinning kHelperSpin, then blocked) until a job newer than `seen` is published or
// the pool stops; returns false on stop.
bool wait_for_job(Pool& p, uint32_t seen) {
  auto fresh = [&] { return epoch_of(p.word.load(std::memory_order_acquire)) != seen; };
  const auto until = Clock::now() + kHelperSpin;
  for (int i = 0;; ++i) {
    if (p.stop.load(std::memory_order_acquire)) return false;
    if (fresh()) return true;
    SRIGL_POOL_PAUSE();
    if ((i & 63) == 63 && Clock::now() > until) break;
  }
  std::unique_lock<std::mutex> lock(p.m);
  p.sleepers.fetch_add(1);  // seq_cst, paired with publish(): one side sees the other
  p.cv.wait(lock, [&] { return p.stop.load() || epoch_of(p.word.load()) != seen; });
  p.sleepers.fetch_sub(1);
  return !p.stop.load();
}

void helper_main(Pool* p) {
  uint32_t seen = epoch_of(p->word.load(std::memory_order_acquire));
  while (wait_for_job(*p, seen)) {
    seen = epoch_of(p->word.load(std::memory_order_acquire));
    const int64_t delay = g_helper_delay_us.load(std::memory_order_relaxed);
    if (delay > 0) std::this_thread::sleep_for(std::chrono::microseconds(delay));
    const int64_t ran = claim_and_run(*p, seen);
    if (ran) p->helper_chunks.fetch_add(ran, std::memory_order_relaxed);
  }
}

// Makes the helper count `want` (the caller holds `busy`, so no job is running).
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
  for (size_t i = 0; i < want; ++i) p.helpers.emplace_back(helper_main, &p);
}

void publish(Pool& p, uint32_t n, ChunkFn fn, void* ctx) {
  const uint32_t epoch = epoch_of(p.word.load(std::memory_order_relaxed)) + 1;
  p.fn.store(fn, std::memory_order_relaxed);
  p.ctx.store(ctx, std::memory_order_relaxed);
  p.done.store(0, std::memory_order_relaxed);
  p.word.store(word_of(epoch, n, 0));  // seq_cst: release for the fields above
  if (p.sleepers.load() > 0) {
    { std::lock_guard<std::mutex> lock(p.m); }
    p.cv.notify_all();
  }
}

void in_forked_child() { g_pool.store(nullptr); }  // the parent's helpers do not exist here

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return *p;
  static const int registered = pthread_atfork(nullptr, nullptr, in_forked_child);
  (void)registered;
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

void run_chunks(int64_t nchunks, ChunkFn fn, void* ctx) {
  const int nt = nchunks > 1 ? threads() : 1;
  if (nt <= 1 || nchunks > kMaxChunks) return run_serial(nchunks, fn, ctx);
  Pool& p = pool();
  if (p.busy.exchange(true, std::memory_order_acquire)) {
    p.busy_serial_jobs.fetch_add(1, std::memory_order_relaxed);
    return run_serial(nchunks, fn, ctx);
  }
  resize(p, static_cast<size_t>(nt - 1));
  publish(p, static_cast<uint32_t>(nchunks), fn, ctx);
  claim_and_run(p, epoch_of(p.word.load(std::memory_order_relaxed)));
  for (int i = 0; p.done.load(std::memory_order_acquire) < nchunks; ++i) {
    if (i < kCallerSpins)
      SRIGL_POOL_PAUSE();
    else
      std::this_thread::yield();  // a helper is inside a chunk but not running
  }
  p.parallel_jobs.fetch_add(1, std::memory_order_relaxed);
  p.busy.store(false, std::memory_order_release);
}

std::vector<int64_t> stats() {
  Pool& p = pool();
  const bool held = p.busy.exchange(true, std::memory_order_acquire);
  const int64_t helpers = held ? -1 : static_cast<int64_t>(p.helpers.size());
  if (!held) p.busy.store(false, std::memory_order_release);
  return {helpers, p.parallel_jobs.load(), p.busy_serial_jobs.load(), p.helper_chunks.load()};
}

int64_t set_helper_delay_us(int64_t us) { return g_helper_delay_us.exchange(us < 0 ? 0 : us); }

}  // namespace srigl_pool
