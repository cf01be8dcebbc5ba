// Inline SVG for the self-contained HTML report (no scripts, no external resources):
// a line chart (series as polylines or as point markers, linear axes with "nice" ticks
// at 1, 2 or 5 x 10^k, a legend on the right) and a heat map of values in [0, 1]
// (white to blue, the value printed in each cell). Text is XML-escaped; non-finite
// points are left out.
#ifndef PMOL_EVAL_SVG_CHART_H_
#define PMOL_EVAL_SVG_CHART_H_

#include <string>
#include <utility>
#include <vector>

namespace pmol {

struct ChartSeries {
  std::string name;                               // legend text
  std::string color;                              // CSS colour, e.g. "#1f77b4"
  std::vector<std::pair<double, double>> points;  // (x, y)
  bool markers = false;                           // true: a circle per point; false: a polyline
};

struct LineChartOptions {
  std::string title, x_label, y_label;
  int width = 760, height = 300;
};

std::string SvgLineChart(const LineChartOptions& options, const std::vector<ChartSeries>& series);

// values[row][column] in [0, 1] (clamped for colour; printed as is; NaN shows "-").
std::string SvgHeatMap(const std::string& title, const std::vector<std::string>& row_labels,
                       const std::vector<std::string>& column_labels,
                       const std::vector<std::vector<double>>& values);

// & < > " ' as entities.
std::string XmlEscape(const std::string& text);

// Ticks k * step in [lo, hi], step = 1, 2 or 5 x 10^n giving about `target` intervals.
std::vector<double> NiceTicks(double lo, double hi, int target);

// The i-th colour of a fixed qualitative palette (cycles).
std::string PaletteColor(size_t i);

}  // namespace pmol

#endif  // PMOL_EVAL_SVG_CHART_H_
