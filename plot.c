// plot.c: line charts rasterised into an RGB buffer and saved as PNG (see plot.h).
//
// Everything is drawn here by hand: anti-aliased rectangles, thick anti-aliased
// polylines (distance from each pixel centre to the segment, one coverage buffer
// per series so that joints are not painted twice), axes, ticks, grid and legends.
// The only outside code is stb_easy_font, which turns text into quads in font
// units, and stb_image_write, which encodes the finished buffer as PNG.
//
// Coordinates: pixel (i, j) covers [i, i+1) x [j, j+1), rows from the top. A
// panel maps its axis minimum to the centre of its first column (row) and its
// maximum to the centre of its last, so a tick at an axis end lands on the frame.
#include "plot.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_easy_font.h>
#pragma GCC diagnostic pop
#include <stb/stb_image_write.h>

// ----------------------------------------------------------------------------
// Look

#define COLOR_BG 0xFFFFFFu
#define COLOR_GRID 0xE3E3E3u
#define COLOR_FRAME 0x8A8A8Au
#define COLOR_TEXT 0x1E1E1Eu
#define COLOR_TICK_TEXT 0x3C3C3Cu
#define COLOR_LEGEND_BG 0xFFFFFFu
#define COLOR_LEGEND_EDGE 0xC4C4C4u

#define PAD 10               // pixels kept clear around each panel and the heading
#define TICK_LEN 5           // major tick marks, pixels outside the frame
#define MINOR_LEN 3          // minor (log) tick marks
#define LINE_HALF_WIDTH 1.0  // lines are 2 px wide
#define DOT_HALF_WIDTH 2.0   // isolated points are drawn as dots 4 px across
#define LEGEND_ALPHA 0.88f   // opacity of the legend's background

// stb_easy_font glyphs: capitals fill rows 0..7 of a cell, descenders reach row 9;
// strings are at most TEXT_MAX bytes and take at most VBUF_PER_CHAR vertex bytes
// per character (the heaviest glyphs need about 700).
#define FONT_CAP 7
#define FONT_H 9
#define TEXT_MAX 255
#define VBUF_PER_CHAR 1024

#define MAX_TICKS 64
#define MAX_MINOR 256

// Automatic series colours, picked to stay apart on white and from each other.
static const uint32_t palette[10] = {
    0x2163B0, // blue
    0xE0761A, // orange
    0x2E9247, // green
    0xC9302C, // red
    0x7A52B3, // purple
    0x8C5A3C, // brown
    0xD65DA8, // pink
    0x5C5C5C, // grey
    0xA8A81E, // olive
    0x1BA6C0, // cyan
};

// ----------------------------------------------------------------------------
// Canvas: the target buffer and the scratch space every drawing step shares

typedef struct {
    uint8_t* rgb; // h rows of w pixels, 3 bytes each
    int w, h;     // picture size in pixels
    char* vbuf;   // stb_easy_font vertices, TEXT_MAX * VBUF_PER_CHAR bytes
    float* cov;   // one series' line coverage over a plot area, up to w * h
    float* occ;   // the union of a panel's coverages, for placing the legend
    int scale;    // text scale in the panels (pixels per font unit)
} Canvas;

static void set_err(char* err, size_t errlen, const char* fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static double clampd(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

// Mixes colour col into pixel (x, y) with weight a in [0, 1]; outside: no effect.
static void blend(Canvas* c, int x, int y, uint32_t col, float a)
{
    if (x < 0 || y < 0 || x >= c->w || y >= c->h || !(a > 0.0f)) return;
    if (a > 1.0f) a = 1.0f;
    uint8_t* p = c->rgb + 3 * ((size_t)y * (size_t)c->w + (size_t)x);
    float want[3] = {(float)(col >> 16 & 255), (float)(col >> 8 & 255), (float)(col & 255)};
    for (int k = 0; k < 3; k++) {
        p[k] = (uint8_t)lrintf((float)p[k] + (want[k] - (float)p[k]) * a);
    }
}

// Fills [x0, x1) x [y0, y1) with opacity a; pixels cut by an edge get the covered
// fraction, so rectangles at fractional positions come out anti-aliased.
static void fill_rect(Canvas* c, double x0, double y0, double x1, double y1, uint32_t col,
                      float a)
{
    // clip first, so that the integer conversions below cannot overflow
    x0 = clampd(x0, 0, c->w);
    x1 = clampd(x1, 0, c->w);
    y0 = clampd(y0, 0, c->h);
    y1 = clampd(y1, 0, c->h);
    if (!(x1 > x0) || !(y1 > y0)) return;

    // each pixel gets the product of its horizontal and vertical overlaps
    int ix0 = (int)floor(x0), ix1 = (int)ceil(x1);
    int iy0 = (int)floor(y0), iy1 = (int)ceil(y1);
    for (int j = iy0; j < iy1; j++) {
        double fy = fmin(y1, j + 1.0) - fmax(y0, (double)j);
        for (int i = ix0; i < ix1; i++) {
            double fx = fmin(x1, i + 1.0) - fmax(x0, (double)i);
            blend(c, i, j, col, a * (float)(fx * fy));
        }
    }
}

// One-pixel outline just inside [x0, x1) x [y0, y1).
static void stroke_rect(Canvas* c, int x0, int y0, int x1, int y1, uint32_t col)
{
    fill_rect(c, x0, y0, x1, y0 + 1, col, 1.0f);
    fill_rect(c, x0, y1 - 1, x1, y1, col, 1.0f);
    fill_rect(c, x0, y0, x0 + 1, y1, col, 1.0f);
    fill_rect(c, x1 - 1, y0, x1, y1, col, 1.0f);
}

// ----------------------------------------------------------------------------
// Text

// Copies in (NULL reads as "") into out (TEXT_MAX + 4 bytes), one line of
// printable ASCII: the font indexes a table by byte, so anything else becomes '?'.
static void text_clean(char* out, const char* in)
{
    size_t n = 0;
    for (; in && in[n] && n < TEXT_MAX; n++) {
        unsigned char ch = (unsigned char)in[n];
        out[n] = ch >= 32 && ch < 127 ? (char)ch : '?';
    }
    out[n] = '\0';
}

// Width in pixels of cleaned text at the given scale, without the trailing gap.
static double text_width(char* clean, int scale)
{
    if (!clean[0]) return 0.0;
    return (double)(stb_easy_font_width(clean) - 1) * scale;
}

// Cleans in into out and, when wider than max_w pixels, shortens it to end in
// "..." (or to nothing when even that does not fit).
static void text_fit(char* out, const char* in, int scale, double max_w)
{
    text_clean(out, in);
    if (text_width(out, scale) <= max_w) return;

    // drop characters from the end until the text and the dots fit
    char tmp[TEXT_MAX + 4];
    for (size_t n = strlen(out); n > 0; n--) {
        memcpy(tmp, out, n);
        memcpy(tmp + n, "...", 4);
        if (text_width(tmp, scale) <= max_w) {
            memcpy(out, tmp, n + 4);
            return;
        }
    }
    out[0] = '\0';
}

// Draws cleaned text with the top-left of its first glyph cell at (x, y). With
// vertical set the text is turned a quarter to the left and reads upwards from
// (x, y), which is then the bottom-left corner of the turned box.
static void text_draw(Canvas* c, double x, double y, int scale, uint32_t col, char* clean,
                      int vertical)
{
    // the font hands back quads in font units; each is an axis-aligned rectangle
    int quads = stb_easy_font_print(0.0f, 0.0f, clean, NULL, c->vbuf,
                                    TEXT_MAX * VBUF_PER_CHAR);
    for (int q = 0; q < quads; q++) {
        float u0 = INFINITY, u1 = -INFINITY, v0 = INFINITY, v1 = -INFINITY;
        for (int k = 0; k < 4; k++) {
            float xy[2];
            memcpy(xy, c->vbuf + 64 * q + 16 * k, sizeof xy);
            u0 = fminf(u0, xy[0]);
            u1 = fmaxf(u1, xy[0]);
            v0 = fminf(v0, xy[1]);
            v1 = fmaxf(v1, xy[1]);
        }

        // scale and place the rectangle, turned when asked
        if (vertical) {
            fill_rect(c, x + v0 * scale, y - u1 * scale, x + v1 * scale, y - u0 * scale,
                      col, 1.0f);
        } else {
            fill_rect(c, x + u0 * scale, y + v0 * scale, x + u1 * scale, y + v1 * scale,
                      col, 1.0f);
        }
    }
}

// Bold text: drawn twice, one pixel apart.
static void text_draw_bold(Canvas* c, double x, double y, int scale, uint32_t col,
                           char* clean)
{
    text_draw(c, x, y, scale, col, clean, 0);
    text_draw(c, x + 1, y, scale, col, clean, 0);
}

// ----------------------------------------------------------------------------
// Axes and ticks

// An axis in its own units: data values, or their log10 on a log axis.
typedef struct {
    double lo, hi;
    int log;
} Axis;

typedef struct {
    int n;
    double pos[MAX_TICKS]; // axis units
    char label[MAX_TICKS][32];
    int n_minor;
    double minor[MAX_MINOR];
} Ticks;

// Smallest step of the form {1, 2, 5} * 10^e that is >= raw (raw > 0).
static double nice_step(double raw)
{
    double e = floor(log10(raw));
    double base = pow(10.0, e);
    double f = raw / base;
    double m = f <= 1.0 + 1e-9 ? 1.0 : f <= 2.0 + 1e-9 ? 2.0 : f <= 5.0 + 1e-9 ? 5.0 : 10.0;
    return m * base;
}

// The next 1-2-5 step above step.
static double next_step(double step)
{
    return nice_step(step * 1.01);
}

// Drops "+" and leading zeros from a printf exponent: "2.5e-05" -> "2.5e-5".
static void tidy_exponent(char* s)
{
    char* e = strchr(s, 'e');
    if (!e) return;
    char* src = e + 1;
    char* dst = e + 1;
    if (*src == '+') {
        src++;
    } else if (*src == '-') {
        *dst++ = *src++;
    }
    while (*src == '0' && src[1]) src++;
    memmove(dst, src, strlen(src) + 1);
}

// A tick value on a linear scale with the given step; maxabs is the largest
// magnitude on the axis and decides between fixed and exponent notation (fixed
// from 1e-4 to 1e6; on a log axis, matching its decade labels, from 1e-3 to 1e4).
static void format_linear(char* out, size_t len, double v, double step, double maxabs,
                          int log_axis)
{
    double fixed_lo = log_axis ? 1e-3 : 1e-4, fixed_hi = log_axis ? 1e4 : 1e6;
    if (fabs(v) < step * 1e-6) v = 0.0; // no "-0.0"
    if (maxabs >= fixed_hi || maxabs < fixed_lo) {
        int sig = (int)(floor(log10(maxabs)) - floor(log10(step))) + 1;
        sig = sig < 1 ? 1 : sig > 8 ? 8 : sig;
        snprintf(out, len, "%.*e", sig - 1, v);
        tidy_exponent(out);
    } else {
        int decimals = step >= 1.0 ? 0 : (int)ceil(-log10(step) - 1e-9);
        snprintf(out, len, "%.*f", decimals, v);
    }
}

// Ticks at multiples of step inside [lo, hi] (values); log_pos stores their log10
// as positions, for a log axis too narrow for decades.
static void ticks_linear(Ticks* t, double lo, double hi, double step, int log_pos)
{
    // grow the step until the ticks fit the array
    t->n = 0;
    t->n_minor = 0;
    double k0 = 0.0, k1 = -1.0;
    for (int tries = 0; tries < 64; tries++) {
        if (!isfinite(step) || !(step > 0.0)) return;
        k0 = ceil(lo / step - 1e-9);
        k1 = floor(hi / step + 1e-9);
        if (k1 - k0 + 1 <= MAX_TICKS) break;
        step = next_step(step);
    }
    if (!(k1 - k0 + 1 <= MAX_TICKS)) return;
    double maxabs = fmax(fabs(k0 * step), fabs(k1 * step));
    if (maxabs == 0.0) maxabs = step;

    // values from integer multiples, so no error accumulates
    for (double k = k0; k <= k1; k++) {
        double v = k * step;
        if (log_pos && v <= 0.0) continue;
        t->pos[t->n] = log_pos ? log10(v) : v;
        format_linear(t->label[t->n], sizeof t->label[0], v, step, maxabs, log_pos);
        t->n++;
    }
}

// Label of m * 10^k on a log axis; plain decimals when the whole axis lies in
// [1e-3, 1e4], else "1e-4" or "5e-4".
static void format_log(char* out, size_t len, int m, int k, int plain)
{
    if (plain) {
        snprintf(out, len, "%g", m * pow(10.0, k));
    } else if (m == 1) {
        snprintf(out, len, "1e%d", k);
    } else {
        snprintf(out, len, "%de%d", m, k);
    }
}

// Ticks at m * 10^k for the mantissas in ms (in axis units [lo, hi]), for k with
// k % stride == 0.
static void ticks_log(Ticks* t, double lo, double hi, const int* ms, int n_ms, int stride)
{
    int k_lo = (int)floor(lo) - 1, k_hi = (int)ceil(hi) + 1;
    int plain = lo >= -3.0 - 1e-9 && hi <= 4.0 + 1e-9;
    t->n = 0;
    t->n_minor = 0;
    for (int k = k_lo; k <= k_hi; k++) {
        if (((k % stride) + stride) % stride != 0) continue;
        for (int i = 0; i < n_ms && t->n < MAX_TICKS; i++) {
            double u = k + log10((double)ms[i]);
            if (u < lo - 1e-9 || u > hi + 1e-9) continue;
            t->pos[t->n] = u;
            format_log(t->label[t->n], sizeof t->label[0], ms[i], k, plain);
            t->n++;
        }
    }
}

// Whether neighbouring tick labels keep clear of each other when the axis is len
// pixels long: widths side by side on a horizontal axis, heights on a vertical one.
static int ticks_fit(Ticks* t, const Axis* ax, double len, int horizontal, int scale)
{
    double per_unit = len / (ax->hi - ax->lo);
    for (int i = 0; i + 1 < t->n; i++) {
        double gap = (t->pos[i + 1] - t->pos[i]) * per_unit;
        double need;
        if (horizontal) {
            need = 0.5 * (text_width(t->label[i], scale) + text_width(t->label[i + 1], scale))
                   + 8.0 * scale;
        } else {
            need = 2.2 * FONT_CAP * scale;
        }
        if (gap < need) return 0;
    }
    return 1;
}

// Chooses the ticks of an axis len pixels long: the densest 1-2-5 spacing whose
// labels do not collide (decades, or 1-2-5 within decades, on a log axis).
static void axis_ticks(Ticks* t, const Axis* ax, double len, int horizontal, int scale)
{
    double span = ax->hi - ax->lo;

    // log axis with two or more decades inside: every decade, or every stride-th
    if (ax->log) {
        int k0 = (int)ceil(ax->lo - 1e-9), k1 = (int)floor(ax->hi + 1e-9);
        if (k1 - k0 >= 1) {
            static const int strides[] = {1, 2, 3, 5, 10, 20, 50, 100};
            static const int one[] = {1};
            for (size_t s = 0; s < sizeof strides / sizeof strides[0]; s++) {
                ticks_log(t, ax->lo, ax->hi, one, 1, strides[s]);
                if (ticks_fit(t, ax, len, horizontal, scale)) break;
            }

            // minor ticks at 2..9 when every decade is labelled and has room
            int stride1 = t->n >= 2 && fabs(t->pos[1] - t->pos[0] - 1.0) < 1e-9;
            if (stride1 && len / span >= 40.0) {
                for (int k = (int)floor(ax->lo); k <= (int)ceil(ax->hi); k++) {
                    for (int m = 2; m <= 9 && t->n_minor < MAX_MINOR; m++) {
                        double u = k + log10((double)m);
                        if (u > ax->lo && u < ax->hi) t->minor[t->n_minor++] = u;
                    }
                }
            }
            return;
        }

        // under two decades: try 1, 2 and 5 in each decade
        static const int ms[] = {1, 2, 5};
        ticks_log(t, ax->lo, ax->hi, ms, 3, 1);
        if (t->n >= 3 && ticks_fit(t, ax, len, horizontal, scale)) return;
    }

    // linear spacing (also on a log axis spanning too little for 1-2-5)
    double lo = ax->log ? pow(10.0, ax->lo) : ax->lo;
    double hi = ax->log ? pow(10.0, ax->hi) : ax->hi;
    double guess = horizontal ? 36.0 * scale : 14.0 * scale;
    double step = nice_step((hi - lo) / fmax(1.0, len / guess));
    for (int tries = 0; tries < 40; tries++) {
        ticks_linear(t, lo, hi, step, ax->log);
        if (t->n <= 2 || ticks_fit(t, ax, len, horizontal, scale)) break;
        step = next_step(step);
    }
}

// Axis limits from the data range [lo, hi] (axis units, lo <= hi, or lo > hi when
// there is no data): a fraction pad of the span added on both sides, and a range
// made up around a constant.
static Axis axis_make(double lo, double hi, int log, double pad)
{
    Axis a = {lo, hi, log};
    if (!(lo <= hi) || !isfinite(lo) || !isfinite(hi)) {
        a.lo = 0.0;
        a.hi = 1.0;
        return a;
    }
    double mag = fmax(fabs(lo), fabs(hi));
    if (hi - lo <= 1e-7 * mag || hi == lo) {
        double d = log ? 0.5 : mag > 0.0 ? 0.1 * mag : 1.0;
        a.lo = lo - d;
        a.hi = hi + d;
        return a;
    }
    a.lo = lo - pad * (hi - lo);
    a.hi = hi + pad * (hi - lo);
    return a;
}

// ----------------------------------------------------------------------------
// Lines

// Pixel coordinate of axis value u along a plot area from p0 to p1 (exclusive);
// flip for y, which grows downwards.
static double axis_pixel(const Axis* a, double u, int p0, int p1, int flip)
{
    double t = (u - a->lo) / (a->hi - a->lo);
    double len = (double)(p1 - p0 - 1);
    return flip ? p1 - 0.5 - t * len : p0 + 0.5 + t * len;
}

// Raises cov (aw * ah, local coordinates) to the coverage of a segment a-b of half
// width hw: each pixel gets hw + 0.5 minus its centre's distance to the segment,
// clamped to [0, 1], which is a one-pixel soft edge.
static void cover_segment(float* cov, int aw, int ah, double ax, double ay, double bx,
                          double by, double hw)
{
    // bounding box of the fat segment, clipped to the area
    int i0 = (int)floor(clampd(fmin(ax, bx) - hw - 1.0, 0, aw));
    int i1 = (int)ceil(clampd(fmax(ax, bx) + hw + 1.0, 0, aw));
    int j0 = (int)floor(clampd(fmin(ay, by) - hw - 1.0, 0, ah));
    int j1 = (int)ceil(clampd(fmax(ay, by) + hw + 1.0, 0, ah));
    double dx = bx - ax, dy = by - ay;
    double len2 = dx * dx + dy * dy;

    for (int j = j0; j < j1; j++) {
        for (int i = i0; i < i1; i++) {
            // distance from the pixel centre to the closest point of the segment
            double px = i + 0.5 - ax, py = j + 0.5 - ay;
            double t = len2 > 1e-12 ? clampd((px * dx + py * dy) / len2, 0.0, 1.0) : 0.0;
            double ex = px - t * dx, ey = py - t * dy;
            float v = (float)clampd(hw + 0.5 - sqrt(ex * ex + ey * ey), 0.0, 1.0);
            float* p = cov + (size_t)j * aw + i;
            if (v > *p) *p = v;
        }
    }
}

// Whether point i of a series can be drawn on this y axis.
static int point_ok(const PlotSeries* s, int i, int log_y)
{
    float x = s->x[i], y = s->y[i];
    return isfinite(x) && isfinite(y) && (!log_y || y > 0.0f);
}

// A panel's plot area and its two axes.
typedef struct {
    int x0, y0, x1, y1;
    Axis xa, ya;
} Frame;

static void frame_point(const Frame* f, float x, float y, double* px, double* py)
{
    *px = axis_pixel(&f->xa, x, f->x0, f->x1, 0) - f->x0;
    *py = axis_pixel(&f->ya, f->ya.log ? log10(y) : y, f->y0, f->y1, 1) - f->y0;
}

// Consecutive points that land in one pixel column, in local pixel coordinates.
typedef struct {
    int n;            // points in the run, 0 when none is open
    long col;         // their column
    double fx, fy;    // first point
    double lx, ly;    // last point
    double x_sum;     // for the mean x
    double y_lo, y_hi;
} Run;

// Adds the coverage of a finished run to cov: the link from the previous run's last
// point (*has_prev, *px, *py), then the run itself, exact for one or two points and
// as the vertical span of its y values for more, which is what a dense polyline
// inside one column covers. A single point starting and ending a line is a dot.
static void run_cover(float* cov, int aw, int ah, const Run* r, int ends_line,
                      int* has_prev, double* px, double* py)
{
    if (*has_prev) {
        cover_segment(cov, aw, ah, *px, *py, r->fx, r->fy, LINE_HALF_WIDTH);
    }
    if (r->n == 1 && !*has_prev && ends_line) {
        cover_segment(cov, aw, ah, r->fx, r->fy, r->fx, r->fy, DOT_HALF_WIDTH);
    } else if (r->n == 2) {
        cover_segment(cov, aw, ah, r->fx, r->fy, r->lx, r->ly, LINE_HALF_WIDTH);
    } else if (r->n > 2) {
        double xm = r->x_sum / r->n;
        cover_segment(cov, aw, ah, xm, r->y_lo, xm, r->y_hi, LINE_HALF_WIDTH);
    }
    *has_prev = 1;
    *px = r->lx;
    *py = r->ly;
}

// Draws one series into the plot area: runs of usable points become polylines,
// lone points dots. Points denser than the pixels are merged column by column,
// so a long log costs about as much as a short one. Adds the coverage into c->occ.
static void series_draw(Canvas* c, const Frame* f, const PlotSeries* s, uint32_t col)
{
    int aw = f->x1 - f->x0, ah = f->y1 - f->y0;
    memset(c->cov, 0, (size_t)aw * ah * sizeof *c->cov);

    // coverage of the line, one column run at a time; bad points end the line
    Run r = {0};
    int has_prev = 0;
    double prev_x = 0.0, prev_y = 0.0;
    for (int i = 0; i < s->n; i++) {
        if (!point_ok(s, i, f->ya.log)) {
            if (r.n) run_cover(c->cov, aw, ah, &r, 1, &has_prev, &prev_x, &prev_y);
            r.n = 0;
            has_prev = 0;
            continue;
        }
        double px, py;
        frame_point(f, s->x[i], s->y[i], &px, &py);
        long column = (long)floor(px);
        if (r.n && column == r.col) {
            r.n++;
            r.lx = px;
            r.ly = py;
            r.x_sum += px;
            r.y_lo = fmin(r.y_lo, py);
            r.y_hi = fmax(r.y_hi, py);
            continue;
        }
        if (r.n) run_cover(c->cov, aw, ah, &r, 0, &has_prev, &prev_x, &prev_y);
        r = (Run){1, column, px, py, px, py, px, py, py};
    }
    if (r.n) run_cover(c->cov, aw, ah, &r, 1, &has_prev, &prev_x, &prev_y);

    // paint once per pixel, so joints do not darken
    for (int j = 0; j < ah; j++) {
        for (int i = 0; i < aw; i++) {
            float v = c->cov[(size_t)j * aw + i];
            if (v <= 0.0f) continue;
            blend(c, f->x0 + i, f->y0 + j, col, v);
            float* o = c->occ + (size_t)j * aw + i;
            if (v > *o) *o = v;
        }
    }
}

static uint32_t series_color(const PlotSeries* s, int index)
{
    return s->color ? s->color & 0xFFFFFFu : palette[index % 10];
}

// ----------------------------------------------------------------------------
// Legend

// Size and arrangement of a panel's legend box.
typedef struct {
    int n;            // named series
    int cols, rows;   // entries fill a column, then the next
    int col_w;        // pixels per column: sample line, gap, name
    int box_w, box_h; // the whole box
    double name_w;    // names are cut to this width
} Legend;

#define LEGEND_MARGIN 6    // pixels between the box and the frame
#define LEGEND_MAX_INK 12.0 // line coverage under the box that makes room above the data

// Sizes the legend of panel p for plot area f: the fewest rows that keep the box
// within 60% of the area's width. Returns 0 when nothing is named or it cannot fit.
static int legend_layout(const Canvas* c, const Frame* f, const PlotPanel* p, Legend* L)
{
    int s = c->scale;
    int aw = f->x1 - f->x0, ah = f->y1 - f->y0;
    char buf[TEXT_MAX + 4];
    L->n = 0;
    L->name_w = 0.0;
    for (int i = 0; i < p->n_series; i++) {
        if (!p->series[i].name || !p->series[i].name[0]) continue;
        text_clean(buf, p->series[i].name);
        L->name_w = fmax(L->name_w, text_width(buf, s));
        L->n++;
    }
    if (L->n == 0) return 0;

    // widen by rows until the box is narrow enough
    int pad = 4 * s, row_h = FONT_H * s + 3 * s, sample = 12 * s, gap = 4 * s;
    int col_gap = 8 * s;
    L->cols = 1;
    for (L->rows = 1; L->rows <= L->n; L->rows++) {
        L->cols = (L->n + L->rows - 1) / L->rows;
        L->col_w = sample + gap + (int)ceil(L->name_w);
        L->box_w = 2 * pad + L->cols * L->col_w + (L->cols - 1) * col_gap;
        if (L->box_w <= 0.6 * aw) break;
    }
    if (L->rows > L->n) L->rows = L->n;
    L->rows = (L->n + L->cols - 1) / L->cols;

    // a single column still too wide: cut the names
    double room = aw - 2 * LEGEND_MARGIN - 2 * pad - (L->cols - 1) * col_gap;
    room = room / L->cols - sample - gap;
    if (room < 3 * 6 * s) return 0;
    L->name_w = fmin(L->name_w, room);
    L->col_w = sample + gap + (int)ceil(L->name_w);
    L->box_w = 2 * pad + L->cols * L->col_w + (L->cols - 1) * col_gap;
    L->box_h = 2 * pad + L->rows * row_h - 3 * s;
    return L->box_h <= ah - 2 * LEGEND_MARGIN;
}

// Picks the corner of the plot area where the lines cover the least under the box
// (top right wins ties) and returns that coverage; *bx, *by get the box's corner.
static double legend_place(const Canvas* c, const Frame* f, const Legend* L, int* bx,
                           int* by)
{
    int aw = f->x1 - f->x0, ah = f->y1 - f->y0, m = LEGEND_MARGIN;
    int cx[4] = {aw - m - L->box_w, m, aw - m - L->box_w, m};
    int cy[4] = {m, m, ah - m - L->box_h, ah - m - L->box_h};
    double best_cost = INFINITY;
    for (int k = 0; k < 4; k++) {
        double cost = 0.0;
        for (int j = cy[k]; j < cy[k] + L->box_h; j++) {
            const float* row = c->occ + (size_t)j * aw;
            for (int i = cx[k]; i < cx[k] + L->box_w; i++) cost += row[i];
        }
        if (cost < best_cost - 0.5) {
            best_cost = cost;
            *bx = f->x0 + cx[k];
            *by = f->y0 + cy[k];
        }
    }
    return best_cost;
}

// Draws the legend box with its top-left corner at (bx, by).
static void legend_draw(Canvas* c, const PlotPanel* p, const Legend* L, int bx, int by)
{
    int s = c->scale;
    int pad = 4 * s, row_h = FONT_H * s + 3 * s, sample = 12 * s, gap = 4 * s;
    int col_gap = 8 * s;
    char buf[TEXT_MAX + 4];
    fill_rect(c, bx, by, bx + L->box_w, by + L->box_h, COLOR_LEGEND_BG, LEGEND_ALPHA);
    stroke_rect(c, bx, by, bx + L->box_w, by + L->box_h, COLOR_LEGEND_EDGE);

    // a short line in the series' colour, then its name
    int e = 0;
    for (int i = 0; i < p->n_series; i++) {
        const PlotSeries* ser = &p->series[i];
        if (!ser->name || !ser->name[0]) continue;
        int x = bx + pad + (e / L->rows) * (L->col_w + col_gap);
        int y = by + pad + (e % L->rows) * row_h;
        int mid = y + (FONT_CAP * s) / 2;
        fill_rect(c, x, mid - LINE_HALF_WIDTH, x + sample, mid + LINE_HALF_WIDTH,
                  series_color(ser, i), 1.0f);
        text_fit(buf, ser->name, s, L->name_w);
        text_draw(c, x + sample + gap, y, s, COLOR_TEXT, buf, 0);
        e++;
    }
}

// ----------------------------------------------------------------------------
// Panels

// Data range of a panel in axis units; lo > hi when nothing can be drawn.
static void panel_range(const PlotPanel* p, double* xlo, double* xhi, double* ylo,
                        double* yhi)
{
    *xlo = *ylo = INFINITY;
    *xhi = *yhi = -INFINITY;
    for (int k = 0; k < p->n_series; k++) {
        const PlotSeries* s = &p->series[k];
        for (int i = 0; i < s->n; i++) {
            if (!point_ok(s, i, p->log_y)) continue;
            double y = p->log_y ? log10(s->y[i]) : s->y[i];
            *xlo = fmin(*xlo, s->x[i]);
            *xhi = fmax(*xhi, s->x[i]);
            *ylo = fmin(*ylo, y);
            *yhi = fmax(*yhi, y);
        }
    }
}

// x ticks for f, with the axis stretched to a tick just past either end of the data
// (within 3% of the span), so that a run of 0..1999 reads 0..2000.
static void panel_x_ticks(Ticks* t, Frame* f, int scale)
{
    int len = f->x1 - f->x0;
    axis_ticks(t, &f->xa, len, 1, scale);
    if (t->n < 2) return;
    double step = t->pos[1] - t->pos[0], span = f->xa.hi - f->xa.lo;
    double below = t->pos[0] - step, above = t->pos[t->n - 1] + step;
    int moved = 0;
    if (f->xa.lo - below < 0.03 * span && below < f->xa.lo - 1e-9 * span) {
        f->xa.lo = below;
        moved = 1;
    }
    if (above - f->xa.hi < 0.03 * span && above > f->xa.hi + 1e-9 * span) {
        f->xa.hi = above;
        moved = 1;
    }
    if (moved) axis_ticks(t, &f->xa, len, 1, scale);
}

// Draws panel p into the cell [cx0, cx1) x [cy0, cy1) and reports its plot area.
// When the legend would hide lines in every corner, the cell is drawn again with
// the y axis raised to leave the box's height free above the data.
static void panel_draw(Canvas* c, const PlotPanel* p, int cx0, int cy0, int cx1, int cy1,
                       PlotArea* out)
{
    int s = c->scale;
    int th = FONT_H * s;
    char buf[TEXT_MAX + 4];

    // the data range; x spans exactly the data, y gets 5% to spare
    double xlo, xhi, ylo, yhi;
    panel_range(p, &xlo, &xhi, &ylo, &yhi);
    double headroom = 0.0; // share of the plot height kept above the data
    for (int pass = 0; pass < 2; pass++) {
        Frame f;
        f.xa = axis_make(xlo, xhi, 0, 0.0);
        f.ya = axis_make(ylo, yhi, p->log_y != 0, 0.05);
        f.ya.hi += (f.ya.hi - f.ya.lo) * headroom / (1.0 - headroom);

        // rows from the top: title, plot; from the bottom: x label, tick labels
        int has_title = p->title && p->title[0];
        int has_xlabel = p->xlabel && p->xlabel[0];
        int has_ylabel = p->ylabel && p->ylabel[0];
        int title_y = cy0 + PAD;
        f.y0 = has_title ? title_y + th + 4 * s + 2 : cy0 + PAD + th / 2;
        int xlabel_y = cy1 - PAD - th;
        int xtick_y = (has_xlabel ? xlabel_y - 3 * s : cy1 - PAD) - th;
        f.y1 = xtick_y - TICK_LEN - 3 * s;

        // y ticks first: their labels' width decides where the plot starts
        Ticks yt, xt;
        axis_ticks(&yt, &f.ya, f.y1 - f.y0, 0, s);
        double ytick_w = 0.0;
        for (int i = 0; i < yt.n; i++) ytick_w = fmax(ytick_w, text_width(yt.label[i], s));
        int ylabel_x = cx0 + PAD;
        f.x0 = (has_ylabel ? ylabel_x + th + 4 * s : cx0 + PAD) + (int)ceil(ytick_w)
               + 3 * s + TICK_LEN;
        f.x1 = cx1 - PAD - 8 * s;
        int too_small = f.x1 - f.x0 < 16 || f.y1 - f.y0 < 16;
        if (!too_small) panel_x_ticks(&xt, &f, s);
        *out = (PlotArea){f.x0, f.y0, f.x1, f.y1, f.xa.lo, f.xa.hi,
                          f.ya.log ? pow(10.0, f.ya.lo) : f.ya.lo,
                          f.ya.log ? pow(10.0, f.ya.hi) : f.ya.hi, f.ya.log};
        if (too_small) return;
        int pw = f.x1 - f.x0, ph = f.y1 - f.y0;

        // grid under everything
        for (int i = 0; i < yt.n; i++) {
            int row = (int)floor(axis_pixel(&f.ya, yt.pos[i], f.y0, f.y1, 1));
            fill_rect(c, f.x0, row, f.x1, row + 1, COLOR_GRID, 1.0f);
        }
        for (int i = 0; i < xt.n; i++) {
            int col = (int)floor(axis_pixel(&f.xa, xt.pos[i], f.x0, f.x1, 0));
            fill_rect(c, col, f.y0, col + 1, f.y1, COLOR_GRID, 1.0f);
        }

        // the lines, each in its own colour
        memset(c->occ, 0, (size_t)pw * ph * sizeof *c->occ);
        for (int k = 0; k < p->n_series; k++) {
            series_draw(c, &f, &p->series[k], series_color(&p->series[k], k));
        }

        // no corner free for the legend: start over with room above the data
        Legend L = {0};
        int bx = 0, by = 0;
        int has_legend = legend_layout(c, &f, p, &L);
        double ink = has_legend ? legend_place(c, &f, &L, &bx, &by) : 0.0;
        double need = has_legend ? (L.box_h + 2.0 * LEGEND_MARGIN) / ph : 1.0;
        if (pass == 0 && ink > LEGEND_MAX_INK && need < 0.4) {
            fill_rect(c, cx0, cy0, cx1, cy1, COLOR_BG, 1.0f);
            headroom = need;
            continue;
        }

        // frame, tick marks and tick labels
        stroke_rect(c, f.x0, f.y0, f.x1, f.y1, COLOR_FRAME);
        for (int i = 0; i < yt.n; i++) {
            int row = (int)floor(axis_pixel(&f.ya, yt.pos[i], f.y0, f.y1, 1));
            fill_rect(c, f.x0 - TICK_LEN, row, f.x0, row + 1, COLOR_FRAME, 1.0f);
            double tw = text_width(yt.label[i], s);
            double ty = clampd(row + 0.5 - 0.5 * FONT_CAP * s, cy0, cy1 - th);
            text_draw(c, f.x0 - TICK_LEN - 3 * s - tw, ty, s, COLOR_TICK_TEXT, yt.label[i],
                      0);
        }
        for (int i = 0; i < yt.n_minor; i++) {
            int row = (int)floor(axis_pixel(&f.ya, yt.minor[i], f.y0, f.y1, 1));
            fill_rect(c, f.x0 - MINOR_LEN, row, f.x0, row + 1, COLOR_FRAME, 1.0f);
        }
        for (int i = 0; i < xt.n; i++) {
            int col = (int)floor(axis_pixel(&f.xa, xt.pos[i], f.x0, f.x1, 0));
            fill_rect(c, col, f.y1, col + 1, f.y1 + TICK_LEN, COLOR_FRAME, 1.0f);
            double tw = text_width(xt.label[i], s);
            double tx = clampd(col + 0.5 - 0.5 * tw, cx0 + 1, cx1 - 1 - tw);
            text_draw(c, tx, xtick_y, s, COLOR_TICK_TEXT, xt.label[i], 0);
        }

        // axis labels and title, centred on the plot area
        if (has_xlabel) {
            text_fit(buf, p->xlabel, s, pw);
            double tw = text_width(buf, s);
            text_draw(c, f.x0 + 0.5 * (pw - tw), xlabel_y, s, COLOR_TEXT, buf, 0);
        }
        if (has_ylabel) {
            text_fit(buf, p->ylabel, s, ph);
            double tw = text_width(buf, s);
            text_draw(c, ylabel_x, f.y1 - 0.5 * (ph - tw), s, COLOR_TEXT, buf, 1);
        }
        if (has_title) {
            text_fit(buf, p->title, s, cx1 - cx0 - 2 * PAD);
            double tw = text_width(buf, s);
            double tx = clampd(f.x0 + 0.5 * (pw - tw), cx0 + PAD, cx1 - PAD - tw);
            text_draw_bold(c, tx, title_y, s, COLOR_TEXT, buf);
        }
        if (has_legend) legend_draw(c, p, &L, bx, by);
        return;
    }
}

// ----------------------------------------------------------------------------
// Public functions

// Checks the arguments of plot_render; returns 0 or -1 with a message.
static int check_args(int w, int h, const PlotPanel* panels, int n_panels, char* err,
                      size_t errlen)
{
    if (w < PLOT_MIN_SIZE || h < PLOT_MIN_SIZE || w > PLOT_MAX_SIZE || h > PLOT_MAX_SIZE) {
        set_err(err, errlen, "plot size %d x %d is out of range (use %d to %d pixels a side)",
                w, h, PLOT_MIN_SIZE, PLOT_MAX_SIZE);
        return -1;
    }
    if (n_panels < 1 || n_panels > PLOT_MAX_PANELS || !panels) {
        set_err(err, errlen, "plot needs 1 to %d panels, got %d%s", PLOT_MAX_PANELS,
                n_panels, panels ? "" : " (panels is NULL)");
        return -1;
    }
    for (int k = 0; k < n_panels; k++) {
        const PlotPanel* p = &panels[k];
        if (p->n_series < 0 || (p->n_series > 0 && !p->series)) {
            set_err(err, errlen, "plot panel %d: %d series but series is %s", k,
                    p->n_series, p->series ? "set" : "NULL");
            return -1;
        }
        for (int i = 0; i < p->n_series; i++) {
            const PlotSeries* s = &p->series[i];
            if (s->n < 0 || (s->n > 0 && (!s->x || !s->y))) {
                set_err(err, errlen,
                        "plot panel %d series %d: n = %d needs x and y arrays of n floats",
                        k, i, s->n);
                return -1;
            }
        }
    }
    return 0;
}

int plot_render(uint8_t* rgb, int w, int h, const PlotPanel* panels, int n_panels,
                const char* heading, PlotArea* areas, char* err, size_t errlen)
{
    if (!rgb) {
        set_err(err, errlen, "plot buffer is NULL");
        return -1;
    }
    if (check_args(w, h, panels, n_panels, err, errlen) != 0) return -1;

    // scratch: font vertices and two float planes as large as the picture
    Canvas c = {rgb, w, h, NULL, NULL, NULL, 2};
    size_t plane = (size_t)w * (size_t)h;
    c.vbuf = malloc((size_t)TEXT_MAX * VBUF_PER_CHAR);
    c.cov = malloc(plane * sizeof *c.cov);
    c.occ = malloc(plane * sizeof *c.occ);
    if (!c.vbuf || !c.cov || !c.occ) {
        free(c.vbuf);
        free(c.cov);
        free(c.occ);
        set_err(err, errlen, "out of memory drawing a %d x %d plot (try a smaller one)", w,
                h);
        return -1;
    }
    for (size_t i = 0; i < plane; i++) {
        rgb[3 * i] = COLOR_BG >> 16 & 255;
        rgb[3 * i + 1] = COLOR_BG >> 8 & 255;
        rgb[3 * i + 2] = COLOR_BG & 255;
    }

    // grid: one column for up to two panels, else two with an odd last one spanning
    int cols = n_panels > 2 ? 2 : 1;
    int rows = (n_panels + cols - 1) / cols;
    int has_heading = heading && heading[0];
    int cell_w = w / cols;
    int cell_h_guess = (h - (has_heading ? 50 : 0)) / rows;
    c.scale = cell_w >= 360 && cell_h_guess >= 220 ? 2 : 1;

    // heading one size up, smaller or cut when it is too wide
    int top = 0;
    if (has_heading) {
        char buf[TEXT_MAX + 4];
        int hs = c.scale + 1;
        text_clean(buf, heading);
        if (text_width(buf, hs) > w - 2 * PAD) hs = c.scale;
        text_fit(buf, heading, hs, w - 2 * PAD);
        double tw = text_width(buf, hs);
        text_draw_bold(&c, 0.5 * (w - tw), PAD, hs, COLOR_TEXT, buf);
        top = PAD + FONT_H * hs + PAD / 2;
    }

    // panels, row by row
    int cell_h = (h - top) / rows;
    for (int k = 0; k < n_panels; k++) {
        int r = k / cols, col = k % cols;
        int span = cols == 2 && k == n_panels - 1 && col == 0;
        int x0 = col * cell_w, x1 = span || col == cols - 1 ? w : x0 + cell_w;
        int y0 = top + r * cell_h, y1 = r == rows - 1 ? h : y0 + cell_h;
        PlotArea area;
        panel_draw(&c, &panels[k], x0, y0, x1, y1, &area);
        if (areas) areas[k] = area;
    }

    free(c.vbuf);
    free(c.cov);
    free(c.occ);
    return 0;
}

int plot_map(const PlotArea* area, double x, double y, double* px, double* py)
{
    if (!isfinite(x) || !isfinite(y) || (area->log_y && y <= 0.0)) return -1;
    Axis xa = {area->xmin, area->xmax, 0};
    Axis ya = {area->log_y ? log10(area->ymin) : area->ymin,
               area->log_y ? log10(area->ymax) : area->ymax, area->log_y};
    *px = axis_pixel(&xa, x, area->x0, area->x1, 0);
    *py = axis_pixel(&ya, area->log_y ? log10(y) : y, area->y0, area->y1, 1);
    return 0;
}

// Where stb_image_write's output goes: a file, and the first error met.
typedef struct {
    FILE* f;
    int failed;
    int err_no;
} PngSink;

static void png_sink_write(void* ctx, void* data, int size)
{
    PngSink* sink = ctx;
    if (sink->failed || size <= 0) return;
    if (fwrite(data, 1, (size_t)size, sink->f) != (size_t)size) {
        sink->failed = 1;
        sink->err_no = errno ? errno : EIO;
    }
}

int plot_write_png(const char* path, int width, int height, const PlotPanel* panels,
                   int n_panels, const char* heading, char* err, size_t errlen)
{
    if (!path || !path[0]) {
        set_err(err, errlen, "plot file name is empty");
        return -1;
    }
    if (check_args(width, height, panels, n_panels, err, errlen) != 0) return -1;

    // draw
    uint8_t* rgb = malloc((size_t)width * (size_t)height * 3);
    if (!rgb) {
        set_err(err, errlen, "out of memory for a %d x %d plot (try a smaller one)", width,
                height);
        return -1;
    }
    if (plot_render(rgb, width, height, panels, n_panels, heading, NULL, err, errlen) != 0) {
        free(rgb);
        return -1;
    }

    // encode into a temporary file beside the target
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp) {
        free(rgb);
        set_err(err, errlen, "plot file name is too long (%zu bytes)", strlen(path));
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    FILE* f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        int e = errno;
        if (fd >= 0) close(fd);
        free(rgb);
        set_err(err, errlen, "cannot create %s: %s (check that the directory exists and is "
                "writable)", tmp, strerror(e));
        return -1;
    }
    PngSink sink = {f, 0, 0};
    int ok = stbi_write_png_to_func(png_sink_write, &sink, width, height, 3, rgb, 3 * width);
    free(rgb);
    if (fflush(f) != 0 && !sink.failed) {
        sink.failed = 1;
        sink.err_no = errno;
    }
    if (fclose(f) != 0 && !sink.failed) {
        sink.failed = 1;
        sink.err_no = errno;
    }
    if (!ok || sink.failed) {
        unlink(tmp);
        set_err(err, errlen, "cannot write %s: %s (check the free disk space)", tmp,
                ok ? strerror(sink.err_no) : "PNG encoder ran out of memory");
        return -1;
    }

    // move it over the target in one step
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        set_err(err, errlen, "cannot rename %s to %s: %s (is the target a directory?)", tmp,
                path, strerror(e));
        return -1;
    }
    return 0;
}
