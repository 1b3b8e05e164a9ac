// plot.h: line charts drawn into an RGB buffer and saved as PNG, for training logs
// (loss curves, per-group learning rates, eta and sigma, jump counts).
//
// A picture is an optional heading line above one or more panels. Up to two panels
// stack vertically; more sit in a grid of two columns, and an odd last panel spans
// both. Each panel has its own axes with ticks at 1-2-5 steps (decades on a log
// axis), a light grid, tick labels, axis labels, a title and a legend placed in the
// corner where it hides the least of the data. Lines are anti-aliased, 2 px wide.
// The x axis spans the data, stretched to a round tick within 3% of either end; the
// y axis adds 5% on both sides, and when the legend would cover lines in every
// corner the top is raised to leave it a free band above the data.
// Text uses the stb_easy_font glyphs drawn at two or three times their size (at
// one time below about 720 x 480 for four panels). The background is white.
//
// Points with a non-finite x or y are skipped and break the line; so are y <= 0
// on a log axis. A point with no usable neighbour is drawn as a dot. Empty panels,
// single points and constant series get a sensible axis range instead of a division
// by zero.
//
// Not here: scatter or bar charts, an x range shared between panels, a second y
// axis, characters beyond printable ASCII (others print as '?'). Text too long for
// its place is cut to end in "...". Nothing is printed; errors come back in err.
#ifndef PLOT_H
#define PLOT_H

#include <stddef.h>
#include <stdint.h>

// One line: n points (x[i], y[i]). name may be NULL (no legend entry). color is
// 0xRRGGBB; 0 picks the palette colour of the series' index in its panel (for
// black, ask for 0x010101).
typedef struct {
    const char* name;
    const float* x;
    const float* y;
    int n;
    uint32_t color;
} PlotSeries;

// One set of axes. title, xlabel and ylabel may be NULL. log_y != 0 puts y on a
// log10 scale (for learning rates).
typedef struct {
    const char* title;
    const char* xlabel;
    const char* ylabel;
    int log_y;
    PlotSeries* series;
    int n_series;
} PlotPanel;

// Where a panel's data went: the plot area is the pixel rectangle x0 <= px < x1,
// y0 <= py < y1, and its axes run from xmin to xmax and ymin to ymax (data units,
// not logs). Filled by plot_render for the tests and for callers that annotate.
typedef struct {
    int x0, y0, x1, y1;
    double xmin, xmax, ymin, ymax;
    int log_y;
} PlotArea;

// Limits of what plot_render accepts.
#define PLOT_MIN_SIZE 64     // smallest width and height in pixels
#define PLOT_MAX_SIZE 16384  // largest width and height in pixels
#define PLOT_MAX_PANELS 32

// Draws the picture into rgb, w * h pixels of 3 bytes each, row by row from the
// top (stride 3 * w). heading may be NULL or "". When areas is not NULL it
// receives n_panels entries. Returns 0, or -1 with a message in err (errlen bytes,
// err may be NULL) when w or h is out of range, n_panels is out of range, panels
// or a series' x/y is NULL where points are promised, or memory runs out; rgb is
// then left untouched or partly drawn.
int plot_render(uint8_t* rgb, int w, int h, const PlotPanel* panels, int n_panels,
                const char* heading, PlotArea* areas, char* err, size_t errlen);

// Maps a data point to pixel coordinates in the picture, where pixel (i, j) covers
// [i, i+1) x [j, j+1): the point lies in column floor(*px), row floor(*py); xmin
// maps to the centre of column x0, ymax to the centre of row y0. Returns 0, or -1
// when the point cannot be shown (non-finite, or y <= 0 on a log axis).
int plot_map(const PlotArea* area, double x, double y, double* px, double* py);

// Renders like plot_render and writes the PNG to path, first to a temporary file
// next to it (path + ".tmp.PID"), then renamed over path, so a reader never sees a
// half-written picture. Returns 0, or -1 with a message in err naming the problem
// (bad arguments, no memory, the file that could not be written and why).
int plot_write_png(const char* path, int width, int height, const PlotPanel* panels,
                   int n_panels, const char* heading, char* err, size_t errlen);

#endif
