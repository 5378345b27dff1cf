// Fused frame kernels of the adedge runtime: plain C++17, no Python, no intrinsics.
//
// preprocess_tiles: uint8 HWC frame -> resize (adedge.preprocess policy "area-down-linear-up",
// reproducing OpenCV's uint8 INTER_AREA / INTER_LINEAR arithmetic) -> colour -> mean/std
// normalisation -> the tiles of a tiling plan written straight into an NCHW float32/float16
// batch. stitch_max_mean: per-tile scores and maps -> max (or mean) score and the
// overlap-averaged map of the resized frame. Both split rows over std::threads.
//
// The Python bindings (module.cpp) validate every argument; these functions trust them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace adedge {

enum class Padding { Reflect, Constant, Replicate };
enum class OutType { Float32, Float16 };

// Geometry of one tiling plan, the same numbers as runtime/tiling.py's TilingPlan.
struct Geometry {
    int resized_h = 0, resized_w = 0;  // the frame is resized to this
    int tile = 0, stride = 0;
    Padding padding = Padding::Reflect;
    // derived by make_geometry
    int rows = 0, cols = 0, padded_h = 0, padded_w = 0;
    int count() const { return rows * cols; }
};

// Fills rows/cols/padded_* like runtime/tiling.py's _axis: the fewest tiles covering each axis.
Geometry make_geometry(int resized_h, int resized_w, int tile, int stride, Padding padding);

struct Frame {
    const std::uint8_t* data = nullptr;
    int height = 0, width = 0, channels = 0;  // channels 1, 3 or 4 (4: alpha ignored)
    std::ptrdiff_t row_stride = 0;            // bytes between rows (>= width * channels)
    bool bgr = false;                         // channel order of 3/4-channel frames
};

struct PreprocessJob {
    Frame frame;
    Geometry geometry;
    int out_channels = 1;             // 1: grey, 3: RGB
    float scale[3] = {1.f, 1.f, 1.f};  // value = u8 * scale - shift, per output channel
    float shift[3] = {0.f, 0.f, 0.f};
    void* out = nullptr;  // C-contiguous (count, out_channels, tile, tile)
    OutType out_type = OutType::Float32;
    int threads = 1;
};

void preprocess_tiles(const PreprocessJob& job);

struct StitchJob {
    Geometry geometry;
    const float* maps = nullptr;  // C-contiguous (count, tile, tile)
    float* out = nullptr;         // C-contiguous (resized_h, resized_w)
    int threads = 1;
};

// The overlap-averaged map (sums in double, tiles added in row-major order, like stitch()).
void stitch_mean_map(const StitchJob& job);

// IEEE binary16 bits of a float, round to nearest even (numpy's astype(float16)).
std::uint16_t float_to_half(float value);

// threads <= 0: every hardware thread.
int resolve_threads(int threads);

}  // namespace adedge
