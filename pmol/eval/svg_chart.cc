// Inline SVG line charts and heat maps; see svg_chart.h.
#include "pmol/eval/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace pmol {
namespace {

std::string Num(double v) { return absl::StrFormat("%.1f", v); }

// Tick labels: up to 4 significant digits, no trailing zeros.
std::string TickLabel(double v) {
  if (std::fabs(v) < 1e-12) return "0";
  return absl::StrFormat("%.4g", v);
}

double NiceStep(double raw) {
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

// [lo, hi] of the finite values, widened when empty or flat.
std::pair<double, double> Range(const std::vector<double>& v, double pad_fraction) {
  double lo = INFINITY, hi = -INFINITY;
  for (double x : v) {
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  if (!(lo <= hi)) return {0, 1};
  if (hi - lo < 1e-12 * std::max(1.0, std::fabs(hi))) {
    const double d = std::max(0.5, std::fabs(hi) * 0.1);
    return {lo - d, hi + d};
  }
  const double pad = (hi - lo) * pad_fraction;
  return {lo - pad, hi + pad};
}

}  // namespace

std::string XmlEscape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::vector<double> NiceTicks(double lo, double hi, int target) {
  std::vector<double> ticks;
  if (!(hi > lo) || target < 1) return ticks;
  const double step = NiceStep((hi - lo) / target);
  const double first = std::ceil(lo / step - 1e-9);
  for (double k = first; k * step <= hi + step * 1e-9; k += 1) ticks.push_back(k * step);
  return ticks;
}

std::string PaletteColor(size_t i) {
  static const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                                  "#ff7f0e", "#17becf", "#8c564b", "#e377c2"};
  return kColors[i % (sizeof(kColors) / sizeof(kColors[0]))];
}

std::string SvgLineChart(const LineChartOptions& o, const std::vector<ChartSeries>& series) {
  const double left = 64, right = 190, top = 28, bottom = 44;
  const double plot_w = o.width - left - right, plot_h = o.height - top - bottom;
  std::vector<double> xs, ys;
  for (const ChartSeries& s : series)
    for (const auto& [x, y] : s.points)
      if (std::isfinite(x) && std::isfinite(y)) xs.push_back(x), ys.push_back(y);
  const auto [x0, x1] = Range(xs, 0.0);
  const auto [y0, y1] = Range(ys, 0.05);
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * plot_w; };
  auto py = [&](double y) { return top + (1 - (y - y0) / (y1 - y0)) * plot_h; };

  std::string svg = absl::StrCat("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", o.width,
                                 "\" height=\"", o.height, "\" viewBox=\"0 0 ", o.width, " ",
                                 o.height, "\" font-family=\"sans-serif\" font-size=\"11\">\n");
  absl::StrAppend(&svg, "<text x=\"", Num(left),
                  "\" y=\"16\" font-size=\"13\" font-weight=\"bold\">", XmlEscape(o.title),
                  "</text>\n");
  absl::StrAppend(&svg, "<rect x=\"", Num(left), "\" y=\"", Num(top), "\" width=\"", Num(plot_w),
                  "\" height=\"", Num(plot_h), "\" fill=\"none\" stroke=\"#999\"/>\n");
  for (double t : NiceTicks(x0, x1, 6)) {
    absl::StrAppend(&svg, "<line x1=\"", Num(px(t)), "\" y1=\"", Num(top), "\" x2=\"", Num(px(t)),
                    "\" y2=\"", Num(top + plot_h), "\" stroke=\"#eee\"/>", "<text x=\"", Num(px(t)),
                    "\" y=\"", Num(top + plot_h + 14), "\" text-anchor=\"middle\">", TickLabel(t),
                    "</text>\n");
  }
  for (double t : NiceTicks(y0, y1, 5)) {
    absl::StrAppend(&svg, "<line x1=\"", Num(left), "\" y1=\"", Num(py(t)), "\" x2=\"",
                    Num(left + plot_w), "\" y2=\"", Num(py(t)), "\" stroke=\"#eee\"/>",
                    "<text x=\"", Num(left - 6), "\" y=\"", Num(py(t) + 4),
                    "\" text-anchor=\"end\">", TickLabel(t), "</text>\n");
  }
  absl::StrAppend(&svg, "<text x=\"", Num(left + plot_w / 2), "\" y=\"", o.height - 8,
                  "\" text-anchor=\"middle\">", XmlEscape(o.x_label), "</text>\n");
  absl::StrAppend(&svg, "<text transform=\"translate(14,", Num(top + plot_h / 2),
                  ") rotate(-90)\" text-anchor=\"middle\">", XmlEscape(o.y_label), "</text>\n");
  if (xs.empty()) {
    absl::StrAppend(&svg, "<text x=\"", Num(left + plot_w / 2), "\" y=\"", Num(top + plot_h / 2),
                    "\" text-anchor=\"middle\" fill=\"#999\">no data</text>\n");
  }
  for (size_t i = 0; i < series.size(); ++i) {
    const ChartSeries& s = series[i];
    const std::string color = XmlEscape(s.color);
    std::string points;
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      if (s.markers) {
        absl::StrAppend(&svg, "<circle cx=\"", Num(px(x)), "\" cy=\"", Num(py(y)),
                        "\" r=\"3.5\" fill=\"", color, "\" stroke=\"white\"/>\n");
      } else {
        absl::StrAppend(&points, points.empty() ? "" : " ", Num(px(x)), ",", Num(py(y)));
      }
    }
    if (!points.empty()) {
      absl::StrAppend(&svg, "<polyline fill=\"none\" stroke=\"", color,
                      "\" stroke-width=\"1.5\" points=\"", points, "\"/>\n");
    }
    const double ly = top + 8 + 16 * i, lx = left + plot_w + 12;
    if (s.markers) {
      absl::StrAppend(&svg, "<circle cx=\"", Num(lx + 9), "\" cy=\"", Num(ly),
                      "\" r=\"3.5\" fill=\"", color, "\"/>");
    } else {
      absl::StrAppend(&svg, "<line x1=\"", Num(lx), "\" y1=\"", Num(ly), "\" x2=\"", Num(lx + 18),
                      "\" y2=\"", Num(ly), "\" stroke=\"", color, "\" stroke-width=\"2\"/>");
    }
    absl::StrAppend(&svg, "<text x=\"", Num(lx + 24), "\" y=\"", Num(ly + 4), "\">",
                    XmlEscape(s.name), "</text>\n");
  }
  absl::StrAppend(&svg, "</svg>\n");
  return svg;
}

std::string SvgHeatMap(const std::string& title, const std::vector<std::string>& row_labels,
                       const std::vector<std::string>& column_labels,
                       const std::vector<std::vector<double>>& values) {
  size_t longest = 4;
  for (const std::string& l : row_labels) longest = std::max(longest, l.size());
  const double cell_w = 72, cell_h = 20, left = 12 + 6.5 * longest, top = 44;
  const double width = left + cell_w * column_labels.size() + 12;
  const double height = top + cell_h * row_labels.size() + 12;
  std::string svg = absl::StrCat("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", Num(width),
                                 "\" height=\"", Num(height), "\" viewBox=\"0 0 ", Num(width), " ",
                                 Num(height), "\" font-family=\"sans-serif\" font-size=\"11\">\n");
  absl::StrAppend(&svg, "<text x=\"4\" y=\"16\" font-size=\"13\" font-weight=\"bold\">",
                  XmlEscape(title), "</text>\n");
  for (size_t c = 0; c < column_labels.size(); ++c) {
    absl::StrAppend(&svg, "<text x=\"", Num(left + cell_w * (c + 0.5)), "\" y=\"", Num(top - 6),
                    "\" text-anchor=\"middle\">", XmlEscape(column_labels[c]), "</text>\n");
  }
  for (size_t r = 0; r < row_labels.size(); ++r) {
    const double y = top + cell_h * r;
    absl::StrAppend(&svg, "<text x=\"", Num(left - 6), "\" y=\"", Num(y + cell_h / 2 + 4),
                    "\" text-anchor=\"end\">", XmlEscape(row_labels[r]), "</text>\n");
    for (size_t c = 0; c < column_labels.size(); ++c) {
      const double v = r < values.size() && c < values[r].size() ? values[r][c] : NAN;
      const double t = std::isfinite(v) ? std::clamp(v, 0.0, 1.0) : 0.0;
      // White (t = 0) to #2166ac (t = 1).
      const int red = static_cast<int>(std::lround(255 + t * (33 - 255)));
      const int green = static_cast<int>(std::lround(255 + t * (102 - 255)));
      const int blue = static_cast<int>(std::lround(255 + t * (172 - 255)));
      absl::StrAppend(
          &svg, "<rect x=\"", Num(left + cell_w * c), "\" y=\"", Num(y), "\" width=\"", Num(cell_w),
          "\" height=\"", Num(cell_h),
          absl::StrFormat("\" fill=\"#%02x%02x%02x\" stroke=\"white\"/>", red, green, blue),
          "<text x=\"", Num(left + cell_w * (c + 0.5)), "\" y=\"", Num(y + cell_h / 2 + 4),
          "\" text-anchor=\"middle\" fill=\"", t > 0.55 ? "white" : "black", "\">",
          std::isfinite(v) ? absl::StrFormat("%.3f", v) : "-", "</text>\n");
    }
  }
  absl::StrAppend(&svg, "</svg>\n");
  return svg;
}

}  // namespace pmol
