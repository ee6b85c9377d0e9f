// ap_fixed side of tests/interop/test_apfixed.py: runs jobs through Xilinx's ap_fixed types.
//
// Built by the test against the ap_types headers that the hls4ml wheel ships (Apache-2.0). The
// jobs are split over parts compiled in parallel: each part is this file with
// -DAPFIXED_CASES="<generated file>" listing its jobs by global index, one line each,
//   JOB(7, quantize<ap_fixed<12, 4, AP_RND_CONV, AP_SAT> >)
// and one part also -DAPFIXED_MAIN (the job table and main()).
// stdin: blocks of int64 [job, n, k, in_len] then in_len int64 payload; stdout: each block's
// outputs (int64), in order; a malformed block stops the program with one line, exit code 2.
// Raw values are the two's-complement integers of the W bits (ap_ufixed: unsigned).
//   quantize<T>:        in n doubles (their bit patterns) -> n raw T          (T v = d;)
//   requantize<TA, TY>: in n raw TA -> n raw TY                               (TY y = a;)
//   accumulate<TX, TW, TA, CAST>: in n sequences [bias, x_0, w_0, ..., x_k-1, w_k-1] (raw) ->
//     n pairs [final raw TA, additions whose result left TA's range]; per step
//     CAST: TA p = x * w; acc += p;   (hls4ml: accum_t mult[] = product; acc += mult)
//     else: acc += x * w;             (the exact product added, the sum cast to TA)
#include <ap_fixed.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N>
int64_t get_raw(const ap_fixed_base<W, I, S, Q, O, N>& v) {
  uint64_t bits = v.range(W - 1, 0).to_uint64();
  if (S && W < 64 && ((bits >> (W - 1)) & 1)) bits |= ~uint64_t(0) << W;  // sign-extend
  return (int64_t)bits;
}

template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N>
void set_raw(ap_fixed_base<W, I, S, Q, O, N>& v, int64_t raw) {
  v.range(W - 1, 0) = ap_uint<W>((ap_ulong)(uint64_t)raw);
}

template <class T>
bool quantize(const int64_t* in, int64_t in_len, int64_t n, int64_t, std::vector<int64_t>& out) {
  if (in_len != n) return false;
  for (int64_t i = 0; i < n; ++i) {
    double d;
    std::memcpy(&d, &in[i], sizeof d);
    T v = d;
    out.push_back(get_raw(v));
  }
  return true;
}

template <class TA, class TY>
bool requantize(const int64_t* in, int64_t in_len, int64_t n, int64_t, std::vector<int64_t>& out) {
  if (in_len != n) return false;
  for (int64_t i = 0; i < n; ++i) {
    TA a;
    set_raw(a, in[i]);
    TY y = a;
    out.push_back(get_raw(y));
  }
  return true;
}

template <class TX, class TW, class TA, bool CAST>
bool accumulate(const int64_t* in, int64_t in_len, int64_t n, int64_t k, std::vector<int64_t>& out) {
  if (in_len != n * (1 + 2 * k)) return false;
  // An overflow: the register differs from the exact sum of its old value and the product at its
  // lsb (cast: the cast product; else x * w shifted by FL_acc - FL_x - FL_w, floor = AP_TRN),
  // summed in int64 (the test keeps it inside); a wider ap_fixed type here costs ~5 s of compile.
  const int shift = (TA::width - TA::iwidth) - (TX::width - TX::iwidth) - (TW::width - TW::iwidth);
  const int64_t* p = in;
  for (int64_t i = 0; i < n; ++i) {
    TA acc;
    set_raw(acc, *p++);
    int64_t overflows = 0;
    for (int64_t j = 0; j < k; ++j) {
      TX x;
      TW w;
      set_raw(x, *p++);
      set_raw(w, *p++);
      const int64_t before = get_raw(acc);
      int64_t term;
      if (CAST) {
        TA prod = x * w;
        term = get_raw(prod);
        acc += prod;
      } else {
        const int64_t xw = get_raw(x) * get_raw(w);
        term = shift >= 0 ? xw * (int64_t(1) << shift) : xw >> -shift;  // >> on int64: floor
        acc += x * w;
      }
      overflows += get_raw(acc) != before + term;
    }
    out.push_back(get_raw(acc));
    out.push_back(overflows);
  }
  return true;
}

typedef bool (*job_fn)(const int64_t*, int64_t, int64_t, int64_t, std::vector<int64_t>&);
struct JobEntry {
  int64_t index;
  job_fn fn;
};
bool register_jobs(const JobEntry* entries, int64_t n);  // defined in the APFIXED_MAIN part

#define JOB(i, ...) {i, &__VA_ARGS__},
static const JobEntry PART[] = {
#include APFIXED_CASES
};
#undef JOB
static const bool registered = register_jobs(PART, sizeof(PART) / sizeof(PART[0]));

#ifdef APFIXED_MAIN
static std::vector<job_fn>& table() {
  static std::vector<job_fn> jobs;
  return jobs;
}

bool register_jobs(const JobEntry* entries, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if ((int64_t)table().size() <= entries[i].index) table().resize(entries[i].index + 1, nullptr);
    table()[entries[i].index] = entries[i].fn;
  }
  return true;
}

static void fail(const char* what) {
  std::fprintf(stderr, "apfixed_check: %s\n", what);
  std::exit(2);
}

int main() {
  int64_t head[4];
  std::vector<int64_t> in, out;
  while (std::fread(head, sizeof(int64_t), 4, stdin) == 4) {
    const int64_t job = head[0], n = head[1], k = head[2], in_len = head[3];
    if (job < 0 || job >= (int64_t)table().size() || !table()[job]) fail("unknown job index");
    if (n < 0 || k < 0 || in_len < 0) fail("negative size in a block header");
    in.resize(in_len);
    out.clear();
    if ((int64_t)std::fread(in.data(), sizeof(int64_t), in_len, stdin) != in_len)
      fail("truncated block");
    if (!table()[job](in.data(), in_len, n, k, out)) fail("payload length does not match the job");
    std::fwrite(out.data(), sizeof(int64_t), out.size(), stdout);
  }
  return 0;
}
#endif
