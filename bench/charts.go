package bench

import (
	"fmt"
	"image/color"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// libColor gives each library the same color in every chart.
func libColor(lib string) color.Color {
	return plotutil.Color(max(slices.Index(allLibs, lib), 0))
}

// writeCharts writes the PNG charts for which the report has results and
// returns their paths.
func writeCharts(rep *Report, dir string) ([]string, error) {
	var files []string
	for _, c := range []struct {
		name string
		make func(*Report) (*plot.Plot, error)
	}{
		{"parallel_throughput.png", parallelChart},
		{"serial_p50.png", serialChart},
		{"hotkey_utilization.png", hotUtilizationChart},
		{"hotkey_handoff_p50.png", hotHandoffChart},
		{"soak_cpu.png", soakChart},
	} {
		p, err := c.make(rep)
		if err != nil {
			return files, fmt.Errorf("%s: %w", c.name, err)
		}
		if p == nil {
			continue
		}
		path := filepath.Join(dir, c.name)
		if err := p.Save(18*vg.Centimeter, 11*vg.Centimeter, path); err != nil {
			return files, fmt.Errorf("save %s: %w", path, err)
		}
		files = append(files, path)
	}
	return files, nil
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Y.Min = 0
	p.Y.Tick.Marker = wholeTicks{}
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p
}

// parallelChart plots Lock+Unlock pairs per second against goroutines,
// one line per library, for the single-process parallel cases.
func parallelChart(rep *Report) (*plot.Plot, error) {
	cases := []struct {
		label string
		g     float64
	}{{"8 goroutines", 8}, {"64 goroutines", 64}, {"256 goroutines", 256}}
	p := newPlot("Distinct keys: Lock+Unlock pairs per second (one process)", "goroutines (log scale)", "ops/s")
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.ConstantTicks([]plot.Tick{{Value: 8, Label: "8"}, {Value: 64, Label: "64"}, {Value: 256, Label: "256"}})
	drawn := false
	for _, lib := range rep.Config.Libraries {
		var pts plotter.XYs
		for _, c := range cases {
			for _, r := range rep.Best {
				if r.Scenario == scParallel && r.Case == c.label && r.Lib == lib && r.Error == "" && r.Throughput != nil {
					pts = append(pts, plotter.XY{X: c.g, Y: r.Throughput.OpsPerSec})
				}
			}
		}
		if len(pts) == 0 {
			continue
		}
		drawn = true
		l, s, err := plotter.NewLinePoints(pts)
		if err != nil {
			return nil, err
		}
		col := libColor(lib)
		l.Color, s.Color = col, col
		l.Width = vg.Points(2)
		s.Shape = draw.CircleGlyph{}
		p.Add(l, s)
		p.Legend.Add(lib, l, s)
	}
	if !drawn {
		return nil, nil
	}
	p.X.Min, p.X.Max = 6, 340
	p.Legend.Left = true
	headroom(p)
	return p, nil
}

// groupedBars draws, for each case (a group on the x axis), one bar per
// library.
func groupedBars(title, y string, cases []string, libs []string, val func(lib, c string) (float64, bool)) (*plot.Plot, error) {
	p := newPlot(title, "", y)
	w := vg.Points(min(90/float64(max(len(libs), 1)), 18))
	drawn := false
	for i, lib := range libs {
		vs := make(plotter.Values, len(cases))
		found := false
		for j, c := range cases {
			if v, ok := val(lib, c); ok {
				vs[j], found = v, true
			}
		}
		if !found {
			continue
		}
		drawn = true
		b, err := plotter.NewBarChart(vs, w)
		if err != nil {
			return nil, err
		}
		b.Color = libColor(lib)
		b.LineStyle.Width = 0
		b.Offset = (vg.Length(i) - vg.Length(len(libs)-1)/2) * w
		p.Add(b)
		p.Legend.Add(lib, b)
	}
	if !drawn {
		return nil, nil
	}
	p.NominalX(cases...)
	headroom(p)
	return p, nil
}

// wholeTicks are gonum's default ticks, labelled as whole numbers with
// thousands separators when the axis spans more than a few units.
type wholeTicks struct{}

func (wholeTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	if hi-lo < 5 {
		return ticks
	}
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = thousands(ticks[i].Value)
		}
	}
	return ticks
}

// headroom raises the top of the y axis above the data, for the legend
// in the top right corner to stay clear of it.
func headroom(p *plot.Plot) {
	p.Y.Max *= 1.45
}

// serialChart draws one bar per library, named on the x axis, with the
// PING p50 as a dashed line.
func serialChart(rep *Report) (*plot.Plot, error) {
	var libs []string
	var ping float64
	p := newPlot("", "", "µs")
	for _, r := range rep.byScenario(scSerial) {
		if r.Error != "" || r.Throughput == nil {
			continue
		}
		b, err := plotter.NewBarChart(plotter.Values{r.Throughput.P50Us}, vg.Points(40))
		if err != nil {
			return nil, err
		}
		b.Color = libColor(r.Lib)
		b.LineStyle.Width = 0
		b.XMin = float64(len(libs))
		p.Add(b)
		libs = append(libs, r.Lib)
		ping = r.PingP50Us
	}
	if len(libs) == 0 {
		return nil, nil
	}
	p.Title.Text = fmt.Sprintf("Serial Lock+Unlock p50 latency, one goroutine (dashed: PING p50, %.0f µs)", ping)
	p.NominalX(libs...)
	line, err := plotter.NewLine(plotter.XYs{{X: -0.5, Y: ping}, {X: float64(len(libs)) - 0.5, Y: ping}})
	if err != nil {
		return nil, err
	}
	line.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	line.Width = vg.Points(1.5)
	p.Add(line)
	p.Y.Max *= 1.1
	return p, nil
}

func hotCases(rep *Report) []string {
	var cases []string
	for _, r := range rep.byScenario(scHot) {
		if !slices.Contains(cases, r.Case) {
			cases = append(cases, r.Case)
		}
	}
	return cases
}

// hotValue returns f of each library's hot-key result in a case; f reports
// false where the figure does not exist.
func hotValue(rep *Report, f func(*Hot) (float64, bool)) func(lib, c string) (float64, bool) {
	return func(lib, c string) (float64, bool) {
		for _, r := range rep.byScenario(scHot) {
			if r.Lib == lib && r.Case == c && r.Error == "" && r.Hot != nil {
				return f(r.Hot)
			}
		}
		return 0, false
	}
}

func hotUtilizationChart(rep *Report) (*plot.Plot, error) {
	cases := hotCases(rep)
	if len(cases) == 0 {
		return nil, nil
	}
	p, err := groupedBars("Hot key (5 ms hold): utilization (time held / wall time)", "utilization", cases, rep.Config.Libraries,
		hotValue(rep, func(h *Hot) (float64, bool) { return h.Utilization, true }))
	if p != nil {
		p.Y.Max = 1.5
	}
	return p, err
}

func hotHandoffChart(rep *Report) (*plot.Plot, error) {
	cases := hotCases(rep)
	if len(cases) == 0 {
		return nil, nil
	}
	return groupedBars("Hot key: handoff p50, unlock call → next grant (µs; no bar: no handoff)", "µs", cases, rep.Config.Libraries,
		hotValue(rep, func(h *Hot) (float64, bool) { return h.HandoffP50Us, h.Handoffs > 0 }))
}

func soakChart(rep *Report) (*plot.Plot, error) {
	rs := rep.byScenario(scSoak)
	if len(rs) == 0 {
		return nil, nil
	}
	cases := []string{"Redis CPU", "client CPU"}
	return groupedBars(fmt.Sprintf("Holding %d auto-extended leases: CPU, %% of one core", rep.Config.SoakLeases), "% of a core", cases, rep.Config.Libraries,
		func(lib, c string) (float64, bool) {
			for _, r := range rs {
				if r.Lib == lib && r.Error == "" && r.Soak != nil {
					if c == "Redis CPU" {
						return r.Soak.RedisCPUPct, true
					}
					return r.Soak.ClientCPUPct, true
				}
			}
			return 0, false
		})
}
