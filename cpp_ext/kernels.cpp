// Fused preprocessing/tiling and stitching kernels; see kernels.hpp and README.md.
//
// Resize arithmetic follows OpenCV 4.x/5.x imgproc/resize.cpp for 8-bit images so that the
// resized pixels equal cv2.resize's (the runtime's numpy/OpenCV twin) within +-1 LSB:
//   * INTER_LINEAR: 11-bit fixed-point coefficients, horizontal int sums, and the 8-bit
//     vertical step ((b0*(S0>>4))>>16) + ((b1*(S1>>4))>>16) + 2) >> 2;
//   * INTER_AREA, integer factors ("area fast"): block sums, (s+2)>>2 for 2x2 (OpenCV's SIMD
//     path), else round(s * (1.f/area)) half-to-even;
//   * INTER_AREA, other factors: the computeResizeAreaTab weights, float sums in OpenCV's order;
//   * INTER_AREA when one axis grows: OpenCV's bilinear emulation ("area_mode" coefficients).
// Grey is OpenCV's RGB2GRAY for 8-bit: (9798 R + 19235 G + 3735 B + 2^14) >> 15 (bit-exact).
// The policy is adedge.preprocess.resize's: INTER_AREA when the pixel count shrinks, else
// INTER_LINEAR; no resize at all when the size is unchanged.
//
// Per thread the only scratch is a few rows (source row in grey, horizontal sums, the resized
// row, the padded output row); the tiles are written straight into the caller's batch.
#include "kernels.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace adedge {
namespace {

constexpr int kCoefBits = 11;  // OpenCV's INTER_RESIZE_COEF_BITS
constexpr int kCoefScale = 1 << kCoefBits;

int floor_int(double v) {
    int i = static_cast<int>(v);
    return i - (i > v);
}

int ceil_int(double v) {
    int i = static_cast<int>(v);
    return i + (i < v);
}

// cvRound / saturate_cast: round half to even (the default FP rounding mode).
int round_even(float v) { return static_cast<int>(std::lrintf(v)); }
int round_even(double v) { return static_cast<int>(std::lrint(v)); }

std::uint8_t clamp_u8(int v) { return static_cast<std::uint8_t>(std::min(255, std::max(0, v))); }

short saturate_short(float v) {
    return static_cast<short>(std::min(32767, std::max(-32768, round_even(v))));
}

// ---------------------------------------------------------------------------------------------
// resize tables

enum class Method { Identity, Linear, AreaFast, Area };

struct LinearAxis {
    std::vector<int> src0, src1;  // clamped source indices
    std::vector<int> c0, c1;      // fixed-point weights (sum ~ 2048)
};

LinearAxis linear_axis(int ssize, int dsize, bool area_mode, bool clamp_taps) {
    const double inv_scale = static_cast<double>(dsize) / ssize;
    const double scale = 1.0 / inv_scale;
    LinearAxis axis;
    axis.src0.resize(dsize);
    axis.src1.resize(dsize);
    axis.c0.resize(dsize);
    axis.c1.resize(dsize);
    for (int d = 0; d < dsize; ++d) {
        float f;
        int s;
        if (!area_mode) {
            f = static_cast<float>((d + 0.5) * scale - 0.5);
            s = floor_int(f);
            f -= static_cast<float>(s);
        } else {
            s = floor_int(d * scale);
            f = static_cast<float>((d + 1) - (s + 1) * inv_scale);
            f = f <= 0 ? 0.f : f - static_cast<float>(floor_int(f));
        }
        if (clamp_taps) {  // OpenCV clamps x taps (and zeroes the weight) but not y taps
            if (s < 0) f = 0.f, s = 0;
            if (s >= ssize - 1) f = 0.f, s = ssize - 1;
        }
        axis.src0[d] = std::min(std::max(s, 0), ssize - 1);
        axis.src1[d] = std::min(std::max(s + 1, 0), ssize - 1);
        axis.c0[d] = saturate_short((1.f - f) * kCoefScale);
        axis.c1[d] = saturate_short(f * kCoefScale);
    }
    return axis;
}

struct AreaAxis {  // entries grouped by destination index: [start[d], start[d + 1])
    std::vector<int> start, src;
    std::vector<float> alpha;
    // the same taps padded to `width` per destination with zero weights (x + S * 0 == x, so
    // sums are unchanged): fixed-length loops for the horizontal pass
    int width = 0;
    std::vector<int> fixed_src;
    std::vector<float> fixed_alpha;
};

void pad_taps(AreaAxis& axis) {
    const int count = static_cast<int>(axis.start.size()) - 1;
    for (int d = 0; d < count; ++d) axis.width = std::max(axis.width, axis.start[d + 1] - axis.start[d]);
    axis.fixed_src.assign(static_cast<size_t>(count) * axis.width, 0);
    axis.fixed_alpha.assign(static_cast<size_t>(count) * axis.width, 0.f);
    for (int d = 0; d < count; ++d) {
        for (int j = 0; j < axis.width; ++j) {
            const int k = std::min(axis.start[d] + j, axis.start[d + 1] - 1);
            const size_t at = static_cast<size_t>(d) * axis.width + j;
            axis.fixed_src[at] = axis.src[k];
            axis.fixed_alpha[at] = axis.start[d] + j < axis.start[d + 1] ? axis.alpha[k] : 0.f;
        }
    }
}

AreaAxis area_axis(int ssize, int dsize) {  // OpenCV's computeResizeAreaTab
    const double scale = 1.0 / (static_cast<double>(dsize) / ssize);
    AreaAxis axis;
    axis.start.reserve(dsize + 1);
    for (int d = 0; d < dsize; ++d) {
        axis.start.push_back(static_cast<int>(axis.src.size()));
        const double fs1 = d * scale;
        const double fs2 = fs1 + scale;
        const double cell = std::min(scale, ssize - fs1);
        int s1 = ceil_int(fs1), s2 = floor_int(fs2);
        s2 = std::min(s2, ssize - 1);
        s1 = std::min(s1, s2);
        if (s1 - fs1 > 1e-3) {
            axis.src.push_back(s1 - 1);
            axis.alpha.push_back(static_cast<float>((s1 - fs1) / cell));
        }
        for (int s = s1; s < s2; ++s) {
            axis.src.push_back(s);
            axis.alpha.push_back(static_cast<float>(1.0 / cell));
        }
        if (fs2 - s2 > 1e-3) {
            axis.src.push_back(s2);
            axis.alpha.push_back(static_cast<float>(std::min(std::min(fs2 - s2, 1.), cell) / cell));
        }
    }
    axis.start.push_back(static_cast<int>(axis.src.size()));
    return axis;
}

struct Resize {
    Method method = Method::Identity;
    int src_h = 0, src_w = 0, dst_h = 0, dst_w = 0;
    LinearAxis lx, ly;
    AreaAxis ax, ay;
    int fx = 1, fy = 1;  // AreaFast integer factors
};

Resize make_resize(int src_h, int src_w, int dst_h, int dst_w) {
    Resize r;
    r.src_h = src_h, r.src_w = src_w, r.dst_h = dst_h, r.dst_w = dst_w;
    if (src_h == dst_h && src_w == dst_w) return r;
    const bool shrinking =
        static_cast<long long>(src_h) * src_w > static_cast<long long>(dst_h) * dst_w;
    const double scale_x = 1.0 / (static_cast<double>(dst_w) / src_w);
    const double scale_y = 1.0 / (static_cast<double>(dst_h) / src_h);
    if (shrinking && scale_x >= 1 && scale_y >= 1) {
        const int ix = round_even(scale_x), iy = round_even(scale_y);
        if (std::abs(scale_x - ix) < DBL_EPSILON && std::abs(scale_y - iy) < DBL_EPSILON) {
            r.method = Method::AreaFast;
            r.fx = ix, r.fy = iy;
        } else {
            r.method = Method::Area;
            r.ax = area_axis(src_w, dst_w);
            pad_taps(r.ax);
            r.ay = area_axis(src_h, dst_h);
        }
        return r;
    }
    r.method = Method::Linear;  // INTER_LINEAR, or INTER_AREA's bilinear emulation
    r.lx = linear_axis(src_w, dst_w, shrinking, true);
    r.ly = linear_axis(src_h, dst_h, shrinking, false);
    return r;
}

// ---------------------------------------------------------------------------------------------
// padding and colour

int pad_index(int i, int length, Padding padding) {  // -1: constant (zero) padding
    if (i < length) return i;
    switch (padding) {
        case Padding::Constant:
            return -1;
        case Padding::Replicate:
            return length - 1;
        case Padding::Reflect:
        default: {
            if (length == 1) return 0;
            const int period = 2 * (length - 1);  // numpy's "reflect", repeated for wide pads
            const int j = i % period;
            return j < length ? j : period - j;
        }
    }
}

struct Source {  // which source channels are resized, and how they map to output channels
    int planes = 1;      // channels resized (1 or 3)
    int offset[3] = {0, 0, 0};
    int plane_of[3] = {0, 0, 0};  // output channel -> resized plane
    bool to_grey = false;         // grey output from a colour frame: convert before resizing
};

Source make_source(const Frame& frame, int out_channels) {
    Source s;
    if (frame.channels == 1) return s;  // grey frame: one plane, repeated for RGB output
    if (out_channels == 1) {
        s.to_grey = true;
        return s;
    }
    s.planes = 3;
    for (int c = 0; c < 3; ++c) {
        s.offset[c] = c;
        s.plane_of[c] = frame.bgr ? 2 - c : c;
    }
    return s;
}

void grey_row(const Frame& frame, int y, std::uint8_t* out) {
    const std::uint8_t* p = frame.data + y * frame.row_stride;
    const int ri = frame.bgr ? 2 : 0, bi = frame.bgr ? 0 : 2, cn = frame.channels;
    for (int x = 0; x < frame.width; ++x, p += cn) {
        out[x] = static_cast<std::uint8_t>((p[ri] * 9798 + p[1] * 19235 + p[bi] * 3735 + 16384) >> 15);
    }
}

// ---------------------------------------------------------------------------------------------
// per-thread row pipeline

template <typename T>
struct Shared {  // read-only state of one call
    const PreprocessJob* job;
    Resize resize;
    Source source;
    std::vector<int> colmap, rowmap;
    T lut[3][256];
};

template <typename T>
class Worker {
   public:
    explicit Worker(const Shared<T>& sh)
        : sh_(sh),
          frame_(sh.job->frame),
          geo_(sh.job->geometry),
          planes_(sh.source.planes),
          width_(geo_.resized_w),
          resized_(static_cast<size_t>(planes_) * width_),
          row_(static_cast<size_t>(sh.job->out_channels) * geo_.padded_w) {
        if (sh_.source.to_grey) grey_.resize(frame_.width);
        const size_t n = static_cast<size_t>(planes_) * width_;
        switch (sh_.resize.method) {
            case Method::Linear:
                ihb_[0].resize(n), ihb_[1].resize(n);
                break;
            case Method::AreaFast:
                ihb_[0].resize(n), ihb_[1].resize(n);
                break;
            case Method::Area:
                fhb_[0].resize(n), fhb_[1].resize(n), fsum_.resize(n);
                break;
            default:
                break;
        }
    }

    void run(int py0, int py1) {
        for (int py = py0; py < py1; ++py) {
            const int ry = sh_.rowmap[py];
            if (ry >= 0 && ry != last_ry_) {
                resize_row(ry);
                last_ry_ = ry;
            }
            build_row(ry);
            write_tiles(py);
        }
    }

   private:
    // a source row as (pointer, pixel stride): the frame's, or its grey conversion
    const std::uint8_t* source_row(int sy, int& pixel_stride) {
        if (sh_.source.to_grey) {
            grey_row(frame_, sy, grey_.data());
            pixel_stride = 1;
            return grey_.data();
        }
        pixel_stride = frame_.channels;
        return frame_.data + sy * frame_.row_stride;
    }

    void resize_row(int ry) {
        switch (sh_.resize.method) {
            case Method::Identity:
                identity_row(ry);
                break;
            case Method::Linear:
                linear_row(ry);
                break;
            case Method::AreaFast:
                area_fast_row(ry);
                break;
            case Method::Area:
                area_row(ry);
                break;
        }
    }

    void identity_row(int ry) {
        int ps;
        const std::uint8_t* src = source_row(ry, ps);
        for (int p = 0; p < planes_; ++p) {
            const std::uint8_t* s = src + sh_.source.offset[p];
            std::uint8_t* d = resized_.data() + static_cast<size_t>(p) * width_;
            for (int x = 0; x < width_; ++x) d[x] = s[x * ps];
        }
    }

    // horizontal fixed-point pass of source row sy, cached in one of two slots
    const int* linear_h(int sy, int keep) {
        for (int slot = 0; slot < 2; ++slot)
            if (ikey_[slot] == sy) return ihb_[slot].data();
        const int slot = ikey_[0] == keep ? 1 : 0;
        int ps;
        const std::uint8_t* src = source_row(sy, ps);
        if (planes_ == 3) {
            linear_h_planes<3>(src, ps, ihb_[slot].data());
        } else {
            linear_h_planes<1>(src, ps, ihb_[slot].data());
        }
        ikey_[slot] = sy;
        return ihb_[slot].data();
    }

    template <int P>
    void linear_h_planes(const std::uint8_t* src, int ps, int* d) {
        const LinearAxis& lx = sh_.resize.lx;
        int off[P];
        for (int p = 0; p < P; ++p) off[p] = sh_.source.offset[p];
        for (int x = 0; x < width_; ++x) {
            const std::uint8_t* a = src + static_cast<size_t>(lx.src0[x]) * ps;
            const std::uint8_t* b = src + static_cast<size_t>(lx.src1[x]) * ps;
            const int c0 = lx.c0[x], c1 = lx.c1[x];
            for (int p = 0; p < P; ++p)
                d[static_cast<size_t>(p) * width_ + x] = a[off[p]] * c0 + b[off[p]] * c1;
        }
    }

    void linear_row(int ry) {
        const LinearAxis& ly = sh_.resize.ly;
        const int s0 = ly.src0[ry], s1 = ly.src1[ry];
        const int* h0 = linear_h(s0, s1);
        const int* h1 = linear_h(s1, s0);
        const int b0 = ly.c0[ry], b1 = ly.c1[ry];
        const size_t n = static_cast<size_t>(planes_) * width_;
        for (size_t i = 0; i < n; ++i) {
            const int v = ((b0 * (h0[i] >> 4)) >> 16) + ((b1 * (h1[i] >> 4)) >> 16) + 2;
            resized_[i] = clamp_u8(v >> 2);
        }
    }

    void area_fast_row(int ry) {
        const int fx = sh_.resize.fx, fy = sh_.resize.fy;
        const size_t n = static_cast<size_t>(planes_) * width_;
        int* acc = ihb_[1].data();
        std::fill(acc, acc + n, 0);
        for (int k = 0; k < fy; ++k) {
            int ps;
            const std::uint8_t* src = source_row(ry * fy + k, ps);
            for (int p = 0; p < planes_; ++p) {
                const std::uint8_t* s = src + sh_.source.offset[p];
                int* a = acc + static_cast<size_t>(p) * width_;
                for (int x = 0; x < width_; ++x) {
                    const std::uint8_t* b = s + static_cast<size_t>(x) * fx * ps;
                    int sum = 0;
                    for (int j = 0; j < fx; ++j) sum += b[j * ps];
                    a[x] += sum;
                }
            }
        }
        if (fx == 2 && fy == 2) {
            for (size_t i = 0; i < n; ++i) resized_[i] = clamp_u8((acc[i] + 2) >> 2);
        } else {
            const float scale = 1.f / static_cast<float>(fx * fy);
            for (size_t i = 0; i < n; ++i)
                resized_[i] = clamp_u8(round_even(static_cast<float>(acc[i]) * scale));
        }
    }

    // horizontal area pass of source row sy, reusing the last row (shared by neighbours)
    const float* area_h(int sy) {
        if (fkey_ == sy) return fhb_[1].data();
        int ps;
        const std::uint8_t* src = source_row(sy, ps);
        if (planes_ == 3) {
            area_h_planes<3>(src, ps);
        } else {
            area_h_planes<1>(src, ps);
        }
        std::swap(fhb_[0], fhb_[1]);
        fkey_ = sy;
        return fhb_[1].data();
    }

    // all planes of a pixel in one pass over the taps (one read of the source row)
    template <int P>
    void area_h_planes(const std::uint8_t* src, int ps) {
        switch (sh_.resize.ax.width) {
            case 2:
                area_h_fixed<P, 2>(src, ps);
                return;
            case 3:
                area_h_fixed<P, 3>(src, ps);
                return;
            case 4:
                area_h_fixed<P, 4>(src, ps);
                return;
            case 5:
                area_h_fixed<P, 5>(src, ps);
                return;
            default:
                break;
        }
        const AreaAxis& ax = sh_.resize.ax;
        float* d = fhb_[0].data();
        for (int x = 0; x < width_; ++x) {
            float v[P];
            for (int p = 0; p < P; ++p) v[p] = 0.f;
            for (int k = ax.start[x]; k < ax.start[x + 1]; ++k) {
                const std::uint8_t* px = src + static_cast<size_t>(ax.src[k]) * ps;
                const float a = ax.alpha[k];
                for (int p = 0; p < P; ++p)
                    v[p] = v[p] + static_cast<float>(px[sh_.source.offset[p]]) * a;
            }
            for (int p = 0; p < P; ++p) d[static_cast<size_t>(p) * width_ + x] = v[p];
        }
    }

    template <int P, int K>
    void area_h_fixed(const std::uint8_t* src, int ps) {
        const AreaAxis& ax = sh_.resize.ax;
        const int* tap_src = ax.fixed_src.data();
        const float* tap_alpha = ax.fixed_alpha.data();
        float* d = fhb_[0].data();
        int off[P];
        for (int p = 0; p < P; ++p) off[p] = sh_.source.offset[p];
        for (int x = 0; x < width_; ++x, tap_src += K, tap_alpha += K) {
            float v[P];
            for (int p = 0; p < P; ++p) v[p] = 0.f;
            for (int k = 0; k < K; ++k) {
                const std::uint8_t* px = src + static_cast<size_t>(tap_src[k]) * ps;
                for (int p = 0; p < P; ++p)
                    v[p] = v[p] + static_cast<float>(px[off[p]]) * tap_alpha[k];
            }
            for (int p = 0; p < P; ++p) d[static_cast<size_t>(p) * width_ + x] = v[p];
        }
    }

    void area_row(int ry) {
        const AreaAxis& ay = sh_.resize.ay;
        const size_t n = static_cast<size_t>(planes_) * width_;
        float* sum = fsum_.data();
        for (int k = ay.start[ry]; k < ay.start[ry + 1]; ++k) {
            const float* h = area_h(ay.src[k]);
            const float beta = ay.alpha[k];
            if (k == ay.start[ry]) {
                for (size_t i = 0; i < n; ++i) sum[i] = beta * h[i];
            } else {
                for (size_t i = 0; i < n; ++i) sum[i] = sum[i] + beta * h[i];
            }
        }
        for (size_t i = 0; i < n; ++i) resized_[i] = clamp_u8(round_even(sum[i]));
    }

    // the padded, normalised row (output channels x padded width) in the output type
    void build_row(int ry) {
        const int channels = sh_.job->out_channels, wp = geo_.padded_w;
        for (int k = 0; k < channels; ++k) {
            T* d = row_.data() + static_cast<size_t>(k) * wp;
            const T* lut = sh_.lut[k];
            if (ry < 0) {
                std::fill(d, d + wp, lut[0]);
                continue;
            }
            const std::uint8_t* r = resized_.data() + static_cast<size_t>(sh_.source.plane_of[k]) * width_;
            for (int x = 0; x < width_; ++x) d[x] = lut[r[x]];
            for (int x = width_; x < wp; ++x) {
                const int c = sh_.colmap[x];
                d[x] = c < 0 ? lut[0] : lut[r[c]];
            }
        }
    }

    void write_tiles(int py) {
        const int tile = geo_.tile, stride = geo_.stride, channels = sh_.job->out_channels;
        const int r_lo = py >= tile ? (py - tile) / stride + 1 : 0;
        const int r_hi = std::min(geo_.rows - 1, py / stride);
        T* out = static_cast<T*>(sh_.job->out);
        const size_t bytes = sizeof(T) * static_cast<size_t>(tile);
        for (int r = r_lo; r <= r_hi; ++r) {
            const size_t yy = static_cast<size_t>(py - r * stride);
            for (int c = 0; c < geo_.cols; ++c) {
                const size_t n = static_cast<size_t>(r) * geo_.cols + c;
                for (int k = 0; k < channels; ++k) {
                    T* dst = out + ((n * channels + k) * tile + yy) * tile;
                    const T* src = row_.data() + static_cast<size_t>(k) * geo_.padded_w +
                                   static_cast<size_t>(c) * stride;
                    std::memcpy(dst, src, bytes);
                }
            }
        }
    }

    const Shared<T>& sh_;
    const Frame& frame_;
    const Geometry& geo_;
    const int planes_, width_;
    std::vector<std::uint8_t> grey_, resized_;
    std::vector<T> row_;
    std::vector<int> ihb_[2];
    int ikey_[2] = {-1, -1};
    std::vector<float> fhb_[2], fsum_;
    int fkey_ = -1;
    int last_ry_ = -1;
};

// Runs body(begin, end) over [0, n) split in contiguous chunks, one per thread.
template <typename Body>
void parallel_chunks(int n, int threads, const Body& body) {
    threads = std::max(1, std::min(threads, n));
    if (threads == 1) {
        body(0, n);
        return;
    }
    std::vector<std::thread> pool;
    std::exception_ptr error;
    std::mutex error_lock;
    auto guarded = [&](int a, int b) {
        try {
            body(a, b);
        } catch (...) {
            std::lock_guard<std::mutex> hold(error_lock);
            if (!error) error = std::current_exception();
        }
    };
    pool.reserve(threads - 1);
    for (int t = 1; t < threads; ++t) {
        pool.emplace_back(guarded, static_cast<int>(static_cast<long long>(n) * t / threads),
                          static_cast<int>(static_cast<long long>(n) * (t + 1) / threads));
    }
    guarded(0, static_cast<int>(static_cast<long long>(n) / threads));
    for (auto& thread : pool) thread.join();
    if (error) std::rethrow_exception(error);
}

// Fewer threads than asked when the work is small: a thread costs ~tens of microseconds.
int useful_threads(int threads, long long work, long long per_thread) {
    const long long most = std::max(1LL, work / per_thread);
    return static_cast<int>(std::min<long long>(resolve_threads(threads), most));
}

template <typename T>
T convert(float value);

template <>
float convert<float>(float value) {
    return value;
}

template <>
std::uint16_t convert<std::uint16_t>(float value) {
    return float_to_half(value);
}

template <typename T>
void preprocess_typed(const PreprocessJob& job) {
    auto sh = std::make_unique<Shared<T>>();
    const Geometry& g = job.geometry;
    sh->job = &job;
    sh->resize = make_resize(job.frame.height, job.frame.width, g.resized_h, g.resized_w);
    sh->source = make_source(job.frame, job.out_channels);
    sh->colmap.resize(g.padded_w);
    sh->rowmap.resize(g.padded_h);
    for (int x = 0; x < g.padded_w; ++x) sh->colmap[x] = pad_index(x, g.resized_w, g.padding);
    for (int y = 0; y < g.padded_h; ++y) sh->rowmap[y] = pad_index(y, g.resized_h, g.padding);
    for (int k = 0; k < job.out_channels; ++k) {
        for (int v = 0; v < 256; ++v) {
            const float product = static_cast<float>(v) * job.scale[k];  // numpy's order
            sh->lut[k][v] = convert<T>(product - job.shift[k]);
        }
    }
    const long long work =
        static_cast<long long>(g.count()) * job.out_channels * g.tile * g.tile +
        static_cast<long long>(job.frame.height) * job.frame.width * job.frame.channels;
    const int threads = useful_threads(job.threads, work, 1 << 16);
    parallel_chunks(g.padded_h, threads, [&](int a, int b) {
        Worker<T> worker(*sh);
        worker.run(a, b);
    });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// public entry points

int resolve_threads(int threads) {
    if (threads > 0) return threads;
    const unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
}

Geometry make_geometry(int resized_h, int resized_w, int tile, int stride, Padding padding) {
    Geometry g;
    g.resized_h = resized_h, g.resized_w = resized_w, g.tile = tile, g.stride = stride;
    g.padding = padding;
    auto axis = [&](int length, int& count, int& padded) {
        if (length <= tile) {
            count = 1, padded = tile;
            return;
        }
        count = (length - tile + stride - 1) / stride + 1;
        padded = (count - 1) * stride + tile;
    };
    axis(resized_h, g.rows, g.padded_h);
    axis(resized_w, g.cols, g.padded_w);
    return g;
}

std::uint16_t float_to_half(float value) {
    // F. Giesen's float_to_half_fast3_rtne: exact round-to-nearest-even, no intrinsics.
    std::uint32_t u;
    std::memcpy(&u, &value, 4);
    const std::uint32_t sign = u & 0x80000000u;
    u ^= sign;
    std::uint16_t out;
    if (u >= (127u + 16u) << 23) {  // overflow to inf, inf, NaN
        out = u > (255u << 23) ? 0x7e00 : 0x7c00;
    } else if (u < (113u << 23)) {  // half subnormal or zero: let float addition round
        const std::uint32_t magic_bits = 126u << 23;  // 0.5f
        float magic, f;
        std::memcpy(&magic, &magic_bits, 4);
        std::memcpy(&f, &u, 4);
        f += magic;
        std::memcpy(&u, &f, 4);
        out = static_cast<std::uint16_t>(u - magic_bits);
    } else {
        const std::uint32_t odd = (u >> 13) & 1u;
        u += (static_cast<std::uint32_t>(15 - 127) << 23) + 0xfffu;
        u += odd;
        out = static_cast<std::uint16_t>(u >> 13);
    }
    return static_cast<std::uint16_t>(out | (sign >> 16));
}

void preprocess_tiles(const PreprocessJob& job) {
    if (job.out_type == OutType::Float32) {
        preprocess_typed<float>(job);
    } else {
        preprocess_typed<std::uint16_t>(job);
    }
}

void stitch_mean_map(const StitchJob& job) {
    const Geometry& g = job.geometry;
    const int tile = g.tile, stride = g.stride, cols = g.cols;
    std::vector<int> cover_w(g.resized_w);  // tiles covering each column
    for (int x = 0; x < g.resized_w; ++x) {
        const int lo = x >= tile ? (x - tile) / stride + 1 : 0;
        cover_w[x] = std::min(cols - 1, x / stride) - lo + 1;
    }
    const long long work = static_cast<long long>(g.count()) * tile * tile;
    const int threads = useful_threads(job.threads, work, 1 << 16);
    parallel_chunks(g.resized_h, threads, [&](int y0, int y1) {
        std::vector<double> acc(g.padded_w);
        for (int y = y0; y < y1; ++y) {
            std::fill(acc.begin(), acc.end(), 0.0);
            const int r_lo = y >= tile ? (y - tile) / stride + 1 : 0;
            const int r_hi = std::min(g.rows - 1, y / stride);
            for (int r = r_lo; r <= r_hi; ++r) {  // row-major tile order, like the numpy twin
                const size_t yy = static_cast<size_t>(y - r * stride);
                for (int c = 0; c < cols; ++c) {
                    const float* src =
                        job.maps + ((static_cast<size_t>(r) * cols + c) * tile + yy) * tile;
                    double* a = acc.data() + static_cast<size_t>(c) * stride;
                    for (int j = 0; j < tile; ++j) a[j] += static_cast<double>(src[j]);
                }
            }
            const double rows_cover = r_hi - r_lo + 1;
            float* out = job.out + static_cast<size_t>(y) * g.resized_w;
            for (int x = 0; x < g.resized_w; ++x)
                out[x] = static_cast<float>(acc[x] / (rows_cover * cover_w[x]));
        }
    });
}

}  // namespace adedge
