// SVG helpers against hand-worked values: nice ticks (1, 2, 5 x 10^n), XML escaping,
// a line chart's polyline coordinates (the plot box is x in [64, 570], y in [28, 256]
// for the default 760 x 300 size) and a heat map's colours at 0 and 1.
#include "pmol/eval/svg_chart.h"

#include <cmath>

#include "gtest/gtest.h"

namespace pmol {
namespace {

void ExpectTicks(double lo, double hi, int target, const std::vector<double>& want) {
  const std::vector<double> got = NiceTicks(lo, hi, target);
  ASSERT_EQ(got.size(), want.size()) << lo << ".." << hi;
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-12);
}

TEST(SvgChartTest, NiceTicks) {
  ExpectTicks(0, 1, 5, {0, 0.2, 0.4, 0.6, 0.8, 1.0});
  ExpectTicks(3, 97, 6, {20, 40, 60, 80});  // raw step 15.7 -> 20
  ExpectTicks(-0.03, 0.07, 5, {-0.02, 0, 0.02, 0.04, 0.06});
  ExpectTicks(1, 1000, 4, {500, 1000});  // raw 249.75 -> 500
  EXPECT_TRUE(NiceTicks(1, 1, 5).empty());
}

TEST(SvgChartTest, XmlEscape) { EXPECT_EQ(XmlEscape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;"); }

TEST(SvgChartTest, LineChartCoordinates) {
  ChartSeries line{"run <1>", "#123456", {{0, 0}, {10, 1}}, false};
  ChartSeries dots{"eval", "#654321", {{5, 0.5}, {6, NAN}}, true};
  LineChartOptions o;
  o.title = "T&T";
  const std::string svg = SvgLineChart(o, {line, dots});
  // y range [0, 1] padded by 5%: [-0.05, 1.05]; plot height 228, width 506.
  // (0, 0): x = 64, y = 28 + (1 - 0.05/1.1) * 228 = 245.6; (10, 1): 570, 38.4.
  EXPECT_NE(svg.find("points=\"64.0,245.6 570.0,38.4\""), std::string::npos) << svg;
  EXPECT_NE(svg.find("<circle cx=\"317.0\" cy=\"142.0\""), std::string::npos) << svg;
  EXPECT_NE(svg.find("run &lt;1&gt;"), std::string::npos);
  EXPECT_NE(svg.find("T&amp;T"), std::string::npos);
  EXPECT_EQ(svg.find("NaN"), std::string::npos);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_NE(SvgLineChart(o, {}).find("no data"), std::string::npos);
}

TEST(SvgChartTest, HeatMapColours) {
  const std::string svg = SvgHeatMap("H", {"row"}, {"a", "b", "c"}, {{0.0, 1.0, NAN}});
  EXPECT_NE(svg.find("fill=\"#ffffff\""), std::string::npos);
  EXPECT_NE(svg.find("fill=\"#2166ac\""), std::string::npos);
  EXPECT_NE(svg.find(">0.000<"), std::string::npos);
  EXPECT_NE(svg.find(">1.000<"), std::string::npos);
  EXPECT_NE(svg.find(">-<"), std::string::npos);
}

}  // namespace
}  // namespace pmol
