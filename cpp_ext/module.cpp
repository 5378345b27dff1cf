// pybind11 bindings: adedge._cpp. Every argument is checked here, with errors that say what
// to pass instead (TypeError for a wrong type or dtype, ValueError for a wrong shape, layout or
// size), before the GIL is released and the kernels in kernels.cpp run.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels.hpp"

namespace py = pybind11;

namespace {

constexpr int kNpyUbyte = 2, kNpyFloat = 11, kNpyDouble = 12, kNpyHalf = 23;

std::string shape_of(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string dtype_of(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

py::array as_array(const py::handle& obj, const char* name) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy array, got " +
                             py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
    return py::reinterpret_borrow<py::array>(obj);
}

int dtype_num(const py::array& a) {
    if (!a.dtype().attr("isnative").cast<bool>()) return -1;  // byte-swapped: reject
    return a.dtype().num();
}

void require_c_contiguous(const py::array& a, const char* name) {
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + " must be C-contiguous (got strides that are " +
                              "not; pass np.ascontiguousarray(" + name + "))");
}

adedge::Padding parse_padding(const std::string& padding) {
    if (padding == "reflect") return adedge::Padding::Reflect;
    if (padding == "constant") return adedge::Padding::Constant;
    if (padding == "replicate") return adedge::Padding::Replicate;
    throw py::value_error("padding must be 'reflect', 'constant' or 'replicate', got '" + padding +
                          "'");
}

adedge::Geometry parse_geometry(const std::pair<int, int>& resized_hw, int tile, int stride,
                                const std::string& padding) {
    if (resized_hw.first <= 0 || resized_hw.second <= 0)
        throw py::value_error("resized_hw must be positive, got (" +
                              std::to_string(resized_hw.first) + ", " +
                              std::to_string(resized_hw.second) + ")");
    if (tile <= 0 || stride <= 0 || stride > tile)
        throw py::value_error("need 0 < stride <= tile, got tile " + std::to_string(tile) +
                              ", stride " + std::to_string(stride));
    return adedge::make_geometry(resized_hw.first, resized_hw.second, tile, stride,
                                 parse_padding(padding));
}

std::vector<float> floats(const py::sequence& values, size_t count, const char* name) {
    if (values.size() != count)
        throw py::value_error(std::string(name) + " needs " + std::to_string(count) +
                              " values (one per output channel), got " +
                              std::to_string(values.size()));
    std::vector<float> out;
    for (const auto& v : values) {
        const float f = v.cast<float>();
        if (!std::isfinite(f)) throw py::value_error(std::string(name) + " must be finite");
        out.push_back(f);
    }
    return out;
}

double max_of(const std::vector<double>& values) {  // NaN wins, like numpy's max
    double best = values[0];
    for (double v : values) {
        if (std::isnan(v)) return v;
        best = std::max(best, v);
    }
    return best;
}

double mean_of(const std::vector<double>& values) {
    double sum = 0.0;
    for (double v : values) sum += v;
    return sum / static_cast<double>(values.size());
}

adedge::Frame parse_frame(const py::array& frame, const std::string& order) {
    if (dtype_num(frame) != kNpyUbyte)
        throw py::type_error("frame must be uint8, got " + dtype_of(frame));
    if (frame.ndim() != 2 && frame.ndim() != 3)
        throw py::value_error("frame must be (H, W) or (H, W, C), got shape " + shape_of(frame));
    adedge::Frame f;
    f.height = static_cast<int>(frame.shape(0));
    f.width = static_cast<int>(frame.shape(1));
    f.channels = frame.ndim() == 3 ? static_cast<int>(frame.shape(2)) : 1;
    if (f.channels != 1 && f.channels != 3 && f.channels != 4)
        throw py::value_error("frame must have 1, 3 or 4 channels, got shape " + shape_of(frame));
    if (f.height <= 0 || f.width <= 0)
        throw py::value_error("frame is empty: shape " + shape_of(frame));
    const bool packed = frame.ndim() == 2 ? frame.strides(1) == 1
                                          : frame.strides(2) == 1 && frame.strides(1) == f.channels;
    if (!packed || frame.strides(0) < static_cast<py::ssize_t>(f.width) * f.channels)
        throw py::value_error(
            "frame must be contiguous along rows (packed pixels, rows in order); got shape " +
            shape_of(frame) + " with a strided view: pass np.ascontiguousarray(frame)");
    if (order != "rgb" && order != "bgr")
        throw py::value_error("order must be 'rgb' or 'bgr', got '" + order + "'");
    f.data = static_cast<const std::uint8_t*>(frame.data());
    f.row_stride = frame.strides(0);
    f.bgr = order == "bgr";
    return f;
}

int preprocess_tiles(const py::object& frame_obj, const py::object& out_obj,
                     std::pair<int, int> resized_hw, int tile, int stride,
                     const std::string& padding, const std::string& colour,
                     const py::sequence& scale, const py::sequence& shift,
                     const std::string& order, int threads) {
    const py::array frame = as_array(frame_obj, "frame");
    py::array out = as_array(out_obj, "out");
    adedge::PreprocessJob job;
    job.frame = parse_frame(frame, order);
    job.geometry = parse_geometry(resized_hw, tile, stride, padding);
    if (colour != "gray" && colour != "rgb")
        throw py::value_error("colour must be 'gray' or 'rgb', got '" + colour + "'");
    job.out_channels = colour == "gray" ? 1 : 3;
    const auto scales = floats(scale, job.out_channels, "scale");
    const auto shifts = floats(shift, job.out_channels, "shift");
    for (int k = 0; k < job.out_channels; ++k) job.scale[k] = scales[k], job.shift[k] = shifts[k];

    const int num = dtype_num(out);
    if (num != kNpyFloat && num != kNpyHalf)
        throw py::type_error("out must be float32 or float16, got " + dtype_of(out));
    job.out_type = num == kNpyFloat ? adedge::OutType::Float32 : adedge::OutType::Float16;
    require_c_contiguous(out, "out");
    if (!out.writeable()) throw py::value_error("out is read-only");
    const int count = job.geometry.count();
    if (out.ndim() != 4 || out.shape(1) != job.out_channels || out.shape(2) != tile ||
        out.shape(3) != tile)
        throw py::value_error("out must be (N, " + std::to_string(job.out_channels) + ", " +
                              std::to_string(tile) + ", " + std::to_string(tile) +
                              ") with N >= " + std::to_string(count) + ", got " + shape_of(out));
    if (out.shape(0) < count)
        throw py::value_error("out is too small: it holds " + std::to_string(out.shape(0)) +
                              " tiles but the plan has " + std::to_string(count));
    job.out = out.mutable_data();
    job.threads = threads;
    {
        py::gil_scoped_release release;
        adedge::preprocess_tiles(job);
    }
    return count;
}

py::tuple stitch_max_mean(const py::object& scores_obj, const py::object& maps_obj,
                          std::pair<int, int> resized_hw, int tile, int stride,
                          const std::string& reduce, const py::object& out_obj, int threads) {
    const py::array scores = as_array(scores_obj, "scores");
    const py::array maps = as_array(maps_obj, "maps");
    adedge::StitchJob job;
    job.geometry = parse_geometry(resized_hw, tile, stride, "reflect");
    const int count = job.geometry.count();
    if (reduce != "max" && reduce != "mean")
        throw py::value_error("reduce must be 'max' or 'mean', got '" + reduce + "'");

    const int snum = dtype_num(scores);
    if (snum != kNpyFloat && snum != kNpyDouble)
        throw py::type_error("scores must be float32 or float64, got " + dtype_of(scores));
    require_c_contiguous(scores, "scores");
    if (scores.size() != count)
        throw py::value_error("got " + std::to_string(scores.size()) +
                              " tile scores but the plan has " + std::to_string(count) + " tiles");

    if (dtype_num(maps) != kNpyFloat)
        throw py::type_error("maps must be float32, got " + dtype_of(maps));
    require_c_contiguous(maps, "maps");
    const bool shaped = (maps.ndim() == 3 && maps.shape(1) == tile && maps.shape(2) == tile) ||
                        (maps.ndim() == 4 && maps.shape(1) == 1 && maps.shape(2) == tile &&
                         maps.shape(3) == tile);
    if (!shaped)
        throw py::value_error("maps must be (N, " + std::to_string(tile) + ", " +
                              std::to_string(tile) + ") or (N, 1, " + std::to_string(tile) +
                              ", " + std::to_string(tile) + "), got " + shape_of(maps));
    if (maps.shape(0) != count)
        throw py::value_error("got " + std::to_string(maps.shape(0)) +
                              " tile maps but the plan has " + std::to_string(count) + " tiles");

    py::array out;
    if (out_obj.is_none()) {
        out = py::array_t<float>({resized_hw.first, resized_hw.second});
    } else {
        out = as_array(out_obj, "out");
        if (dtype_num(out) != kNpyFloat)
            throw py::type_error("out must be float32, got " + dtype_of(out));
        require_c_contiguous(out, "out");
        if (!out.writeable()) throw py::value_error("out is read-only");
        if (out.ndim() != 2 || out.shape(0) != resized_hw.first ||
            out.shape(1) != resized_hw.second)
            throw py::value_error("out must be (" + std::to_string(resized_hw.first) + ", " +
                                  std::to_string(resized_hw.second) + "), got " + shape_of(out));
    }

    std::vector<double> values(count);
    if (snum == kNpyFloat) {
        const float* s = static_cast<const float*>(scores.data());
        std::copy(s, s + count, values.begin());
    } else {
        const double* s = static_cast<const double*>(scores.data());
        std::copy(s, s + count, values.begin());
    }
    const double score = reduce == "max" ? max_of(values) : mean_of(values);

    job.maps = static_cast<const float*>(maps.data());
    job.out = static_cast<float*>(out.mutable_data());
    job.threads = threads;
    {
        py::gil_scoped_release release;
        adedge::stitch_mean_map(job);
    }
    return py::make_tuple(score, out);
}

}  // namespace

PYBIND11_MODULE(_cpp, m) {
    m.doc() =
        "adedge's fused C++ kernels: preprocess_tiles and stitch_max_mean. "
        "Use them through adedge.runtime.kernels, which falls back to the numpy/OpenCV twins.";
    m.def("preprocess_tiles", &preprocess_tiles, py::arg("frame"), py::arg("out"),
          py::kw_only(), py::arg("resized_hw"), py::arg("tile"), py::arg("stride"),
          py::arg("padding"), py::arg("colour"), py::arg("scale"), py::arg("shift"),
          py::arg("order") = "rgb", py::arg("threads") = 0,
          "Resize (adedge's area-down-linear-up policy, OpenCV's 8-bit arithmetic), convert the "
          "colour, normalise (u8 * scale - shift) and write the row-major tiles of the plan into "
          "out, a C-contiguous float32/float16 (N, C, tile, tile) buffer with N >= the tile "
          "count. Returns the tile count. threads <= 0: all cores. Releases the GIL.");
    m.def("stitch_max_mean", &stitch_max_mean, py::arg("scores"), py::arg("maps"), py::kw_only(),
          py::arg("resized_hw"), py::arg("tile"), py::arg("stride"), py::arg("reduce") = "max",
          py::arg("out") = py::none(), py::arg("threads") = 0,
          "(score, map): the tile scores reduced by max (or mean) and the (H, W) float32 map of "
          "the resized frame with overlapping tiles averaged (float64 sums). Releases the GIL.");
    m.def("float_to_half", [](float v) { return adedge::float_to_half(v); }, py::arg("value"),
          "IEEE binary16 bits of a float, rounded to nearest even (for tests).");
    m.def("hardware_threads", []() { return adedge::resolve_threads(0); },
          "Threads used when threads <= 0.");
}
