package main

import (
	"cmp"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"slices"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// The chart is drawn by hand on an image.RGBA with x/image's built-in bitmap
// font: a plotting library would pull a large dependency tree into the
// module for one picture.

var (
	black  = color.RGBA{0x20, 0x20, 0x20, 0xff}
	grey   = color.RGBA{0xd0, 0xd0, 0xd0, 0xff}
	series = []struct {
		name string
		c    color.RGBA
		get  func(quantiles) time.Duration
	}{
		{"p50", color.RGBA{0x1f, 0x77, 0xb4, 0xff}, func(q quantiles) time.Duration { return q.p50 }},
		{"p99", color.RGBA{0xff, 0x7f, 0x0e, 0xff}, func(q quantiles) time.Duration { return q.p99 }},
		{"p99.9", color.RGBA{0xd6, 0x27, 0x28, 0xff}, func(q quantiles) time.Duration { return q.p999 }},
	}
)

const (
	chartW, chartH = 960, 600
	left, right    = 80, 150
	top, bottom    = 50, 60
)

// writeChart plots commit → handled latency (log scale) against the
// achieved throughput of each run.
func writeChart(path string, pts []point) error {
	pts = slices.Clone(pts)
	slices.SortFunc(pts, func(a, b point) int { return cmp.Compare(a.achieved, b.achieved) })
	img := image.NewRGBA(image.Rect(0, 0, chartW, chartH))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)

	maxX := 0.0
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range pts {
		maxX = max(maxX, p.achieved)
		for _, s := range series {
			v := msOf(s.get(p.q))
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	maxX = niceCeil(maxX * 1.05)
	y0 := math.Floor(math.Log10(max(lo, 0.001)))
	y1 := math.Ceil(math.Log10(max(hi, 0.001)))
	if y1 <= y0 {
		y1 = y0 + 1
	}
	pw, ph := float64(chartW-left-right), float64(chartH-top-bottom)
	px := func(x float64) int { return left + int(x/maxX*pw) }
	py := func(ms float64) int {
		return top + int((y1-math.Log10(max(ms, 0.001)))/(y1-y0)*ph)
	}

	// Grid and axes.
	for d := y0; d <= y1; d++ {
		for m := 1; m < 10; m++ {
			v := math.Pow(10, d) * float64(m)
			if math.Log10(v) > y1 {
				break
			}
			y := py(v)
			hline(img, left, chartW-right, y, grey)
			if m == 1 {
				label(img, left-8-7*len(fmtMS(v)), y+4, fmtMS(v), black)
			}
		}
	}
	step := maxX / 5
	for i := 0; i <= 5; i++ {
		x := px(step * float64(i))
		vline(img, x, top, chartH-bottom, grey)
		s := num(step * float64(i))
		label(img, x-7*len(s)/2, chartH-bottom+18, s, black)
	}
	hline(img, left, chartW-right, chartH-bottom, black)
	vline(img, left, top, chartH-bottom, black)
	label(img, left, 24, "Boxcar: commit -> handled latency (log scale) vs achieved throughput", black)
	label(img, left+int(pw)/2-90, chartH-18, "achieved events/s (commit -> handled)", black)
	label(img, 8, top-10, "latency", black)

	// Series.
	for i, s := range series {
		var prev image.Point
		for j, p := range pts {
			pt := image.Point{px(p.achieved), py(msOf(s.get(p.q)))}
			if j > 0 {
				line(img, prev, pt, s.c)
			}
			square(img, pt, s.c)
			prev = pt
		}
		ly := top + 20 + 20*i
		line(img, image.Point{chartW - right + 15, ly - 4}, image.Point{chartW - right + 45, ly - 4}, s.c)
		label(img, chartW-right+52, ly, s.name, black)
	}
	for i, p := range pts {
		x := px(p.achieved)
		y := py(msOf(p.q.p50)) + 22 // below the p50 line, or above p99.9
		if i%2 == 1 {
			y = py(msOf(p.q.p999)) - 12
		}
		label(img, x-7*len(p.label)/2, y, p.label, black)
	}

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func fmtMS(v float64) string {
	if v < 1 {
		return fmt.Sprintf("%g ms", v)
	}
	return fmt.Sprintf("%.0f ms", v)
}

// niceCeil rounds x up to 1, 2 or 5 times a power of ten.
func niceCeil(x float64) float64 {
	if x <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

func label(img *image.RGBA, x, y int, s string, c color.Color) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func hline(img *image.RGBA, x0, x1, y int, c color.Color) {
	for x := x0; x <= x1; x++ {
		img.Set(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.Color) {
	for y := y0; y <= y1; y++ {
		img.Set(x, y, c)
	}
}

// line draws a 2-pixel line from a to b.
func line(img *image.RGBA, a, b image.Point, c color.Color) {
	n := max(abs(b.X-a.X), abs(b.Y-a.Y), 1)
	for i := 0; i <= n; i++ {
		x := a.X + (b.X-a.X)*i/n
		y := a.Y + (b.Y-a.Y)*i/n
		img.Set(x, y, c)
		img.Set(x+1, y, c)
		img.Set(x, y+1, c)
	}
}

func square(img *image.RGBA, p image.Point, c color.Color) {
	for dx := -3; dx <= 3; dx++ {
		for dy := -3; dy <= 3; dy++ {
			img.Set(p.X+dx, p.Y+dy, c)
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
