// test_plot.c: tests for the PNG line charts (suite "plot").
//
// The file written: PNG signature, IHDR size and format, atomic replacement, no
// temporary left behind, and errors for unwritable targets and bad arguments. The
// pixels drawn: the series colour at mapped data points, white elsewhere, nothing
// outside the plot area, gaps at non-finite points, dots for lone points, axis
// ranges for empty, single-point, constant and log data, distinct palette colours,
// a legend that keeps off the line, the panel grid, and text above the panels.
#define _GNU_SOURCE // for testutil.h (nftw, wait4)
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "plot.h"
#include "testutil.h"

// ----------------------------------------------------------------------------
// Helpers

#define WHITE 0xFFFFFFu
#define RED 0xC03020u
#define W 800
#define H 600

static uint32_t pixel(const uint8_t* rgb, int w, int x, int y)
{
    const uint8_t* p = rgb + 3 * ((size_t)y * w + x);
    return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}

// Colour of the pixel holding data point (x, y) of a panel.
static uint32_t pixel_at(const uint8_t* rgb, int w, const PlotArea* a, double x, double y)
{
    double px, py;
    cr_assert_eq(plot_map(a, x, y, &px, &py), 0, "point (%g, %g) not mappable", x, y);
    int ix = (int)floor(px), iy = (int)floor(py);
    cr_assert(ix >= a->x0 && ix < a->x1 && iy >= a->y0 && iy < a->y1,
              "point (%g, %g) maps to (%d, %d), outside the plot area", x, y, ix, iy);
    return pixel(rgb, w, ix, iy);
}

// Renders panels into a fresh W x H buffer, which the caller frees.
static uint8_t* render(const PlotPanel* panels, int n, const char* heading, PlotArea* areas)
{
    uint8_t* rgb = test_calloc((size_t)W * H, 3);
    char err[256] = "";
    int rc = plot_render(rgb, W, H, panels, n, heading, areas, err, sizeof err);
    cr_assert_eq(rc, 0, "plot_render failed: %s", err);
    return rgb;
}

// Pixels of colour col inside (inside != 0) or outside the rectangle of a.
static long count_color(const uint8_t* rgb, const PlotArea* a, uint32_t col, int inside)
{
    long n = 0;
    for (int y = 0; y < H; y++) {
        for (int x = 0; x < W; x++) {
            int in = x >= a->x0 && x < a->x1 && y >= a->y0 && y < a->y1;
            if (in == !!inside && pixel(rgb, W, x, y) == col) n++;
        }
    }
    return n;
}

static uint32_t be32(const unsigned char* p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

// Number of entries in a directory, "." and ".." not counted.
static int dir_entries(const char* dir)
{
    DIR* d = opendir(dir);
    cr_assert_not_null(d, "cannot open %s", dir);
    int n = 0;
    for (struct dirent* e; (e = readdir(d));) {
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    }
    closedir(d);
    return n;
}

// Points of y = x^2 on [0, 1].
enum { NQ = 50 };
static float qx[NQ], qy[NQ];
static void fill_square(void)
{
    for (int i = 0; i < NQ; i++) {
        qx[i] = (float)i / (NQ - 1);
        qy[i] = qx[i] * qx[i];
    }
}

// ----------------------------------------------------------------------------
// Files

Test(plot, png_header_has_signature_and_size)
{
    char dir[] = "/tmp/game-test-plot-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/chart.png", dir);
    fill_square();
    PlotSeries s[2] = {{"square", qx, qy, NQ, 0}, {"line", qx, qx, NQ, 0}};
    PlotPanel p = {"Title", "x", "y", 0, s, 2};
    char err[256] = "";

    // written once, then replaced by a picture of another size
    cr_assert_eq(plot_write_png(path, 320, 200, &p, 1, "first", err, sizeof err), 0, "%s",
                 err);
    cr_assert_eq(plot_write_png(path, 640, 360, &p, 1, "second", err, sizeof err), 0, "%s",
                 err);

    unsigned char head[33];
    FILE* f = fopen(path, "rb");
    cr_assert_not_null(f);
    cr_assert_eq(fread(head, 1, sizeof head, f), sizeof head, "file too short");
    fclose(f);
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    cr_assert_eq(memcmp(head, sig, 8), 0, "no PNG signature");
    cr_assert_eq(be32(head + 8), 13u, "IHDR length %u", be32(head + 8));
    cr_assert_eq(memcmp(head + 12, "IHDR", 4), 0, "first chunk is not IHDR");
    cr_assert_eq(be32(head + 16), 640u, "width %u", be32(head + 16));
    cr_assert_eq(be32(head + 20), 360u, "height %u", be32(head + 20));
    cr_assert_eq(head[24], 8, "bit depth %d", head[24]);
    cr_assert_eq(head[25], 2, "colour type %d, want 2 (RGB)", head[25]);

    // only the picture is left: no temporary file
    cr_assert_eq(dir_entries(dir), 1, "%d files in %s", dir_entries(dir), dir);
    unlink(path);
    rmdir(dir);
}

Test(plot, unwritable_path_fails_with_message)
{
    fill_square();
    PlotSeries s = {"square", qx, qy, NQ, 0};
    PlotPanel p = {"Title", "x", "y", 0, &s, 1};
    char err[256] = "";

    // a directory that does not exist
    int rc = plot_write_png("/nonexistent-game-dir/chart.png", 320, 200, &p, 1, NULL, err,
                            sizeof err);
    cr_assert_eq(rc, -1);
    cr_assert(strstr(err, "/nonexistent-game-dir/chart.png") != NULL, "message: %s", err);

    // a target that is a non-empty directory: the rename fails, the temporary goes
    char dir[] = "/tmp/game-test-plot-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char inner[256];
    snprintf(inner, sizeof inner, "%s/keep", dir);
    FILE* f = fopen(inner, "w");
    cr_assert_not_null(f);
    fclose(f);
    err[0] = '\0';
    rc = plot_write_png(dir, 320, 200, &p, 1, NULL, err, sizeof err);
    cr_assert_eq(rc, -1);
    cr_assert(strstr(err, "rename") != NULL, "message: %s", err);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dir, (long)getpid());
    struct stat st;
    cr_assert_neq(stat(tmp, &st), 0, "temporary %s left behind", tmp);
    unlink(inner);
    rmdir(dir);
}

Test(plot, bad_arguments_are_refused)
{
    fill_square();
    PlotSeries s = {"square", qx, qy, NQ, 0};
    PlotPanel p = {"Title", "x", "y", 0, &s, 1};
    uint8_t* rgb = test_calloc((size_t)W * H, 3);
    char err[256];

    // too small, no panels, no buffer
    err[0] = '\0';
    cr_assert_eq(plot_render(rgb, 10, 10, &p, 1, NULL, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "10 x 10") != NULL, "message: %s", err);
    err[0] = '\0';
    cr_assert_eq(plot_render(rgb, W, H, NULL, 1, NULL, NULL, err, sizeof err), -1);
    cr_assert(err[0] != '\0', "no message for NULL panels");
    cr_assert_eq(plot_render(rgb, W, H, &p, 0, NULL, NULL, err, sizeof err), -1);
    cr_assert_eq(plot_render(NULL, W, H, &p, 1, NULL, NULL, err, sizeof err), -1);
    cr_assert_eq(plot_write_png("/tmp/x.png", 10, H, &p, 1, NULL, err, sizeof err), -1);

    // points promised but no array; a NULL err is allowed
    PlotSeries bad = {"bad", NULL, qy, 5, 0};
    PlotPanel pb = {"Title", "x", "y", 0, &bad, 1};
    err[0] = '\0';
    cr_assert_eq(plot_render(rgb, W, H, &pb, 1, NULL, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "series 0") != NULL, "message: %s", err);
    cr_assert_eq(plot_render(rgb, W, H, &pb, 1, NULL, NULL, NULL, 0), -1);
    free(rgb);
}

// ----------------------------------------------------------------------------
// Pixels

Test(plot, line_colour_at_data_points_and_white_elsewhere)
{
    fill_square();
    PlotSeries s = {NULL, qx, qy, NQ, RED}; // unnamed: no legend over the line
    PlotPanel p = {"Square", "x", "x^2", 0, &s, 1};
    PlotArea a;
    uint8_t* rgb = render(&p, 1, NULL, &a);

    // the area sits inside the picture, x spans the data, y has room to spare
    cr_assert(a.x0 > 0 && a.x1 <= W && a.y0 > 0 && a.y1 <= H && a.x1 - a.x0 > W / 2,
              "area %d,%d - %d,%d", a.x0, a.y0, a.x1, a.y1);
    cr_assert_float_eq(a.xmin, 0.0, 1e-9);
    cr_assert_float_eq(a.xmax, 1.0, 1e-9);
    cr_assert(a.ymin < 0.0 && a.ymax > 1.0 && a.ymax < 1.2, "y %g..%g", a.ymin, a.ymax);

    // data points inside the frame are painted in full series colour
    for (int i = 3; i < NQ - 1; i += 7) {
        uint32_t got = pixel_at(rgb, W, &a, qx[i], qy[i]);
        cr_assert_eq(got, RED, "point %d: colour %06x", i, got);
    }

    // a corner of the picture is background, the line stays inside its area, and
    // most of the area is still white
    cr_assert_eq(pixel(rgb, W, 1, 1), WHITE);
    cr_assert_eq(pixel(rgb, W, W - 2, H - 2), WHITE);
    cr_assert_eq(count_color(rgb, &a, RED, 0), 0, "line colour outside the plot area");
    long area = (long)(a.x1 - a.x0) * (a.y1 - a.y0);
    long red = count_color(rgb, &a, RED, 1), white = count_color(rgb, &a, WHITE, 1);
    cr_assert(red > 2 * (a.x1 - a.x0) / 2, "only %ld line pixels", red);
    cr_assert(white > area * 7 / 10, "only %ld of %ld area pixels white", white, area);

    // a point well away from the curve is white or grid, never the line
    uint32_t off = pixel_at(rgb, W, &a, 0.15, 0.8);
    cr_assert_neq(off, RED);
    cr_assert(off == WHITE || (off >> 16 == (off & 255) && (off & 255) > 200),
              "background %06x", off);
    free(rgb);
}

Test(plot, non_finite_points_break_the_line)
{
    enum { N = 11 };
    float x[N], y[N];
    for (int i = 0; i < N; i++) {
        x[i] = (float)i;
        y[i] = 1.0f + 0.1f * i;
    }
    y[5] = NAN;
    x[8] = INFINITY;
    PlotSeries s = {NULL, x, y, N, RED};
    PlotPanel p = {NULL, NULL, NULL, 0, &s, 1};
    PlotArea a;
    uint8_t* rgb = render(&p, 1, NULL, &a);

    // drawn between good neighbours, missing across the bad ones
    cr_assert_eq(pixel_at(rgb, W, &a, 2.5, 1.25), RED, "segment 2-3 missing");
    cr_assert_eq(pixel_at(rgb, W, &a, 9.5, 1.95), RED, "segment 9-10 missing");
    cr_assert_neq(pixel_at(rgb, W, &a, 5.0, 1.5), RED, "line drawn across a NaN");
    cr_assert_neq(pixel_at(rgb, W, &a, 7.6, 1.76), RED, "line drawn across an inf");
    cr_assert(a.xmin == 0.0 && a.xmax == 10.0, "x %g..%g", a.xmin, a.xmax);
    free(rgb);
}

Test(plot, degenerate_series_do_not_crash)
{
    float px[1] = {3.0f}, py[1] = {2.0f};
    float nan_x[4] = {0, 1, 2, 3}, nan_y[4] = {NAN, NAN, INFINITY, -INFINITY};
    float cx[20], cy[20], zx[20], zy[20];
    for (int i = 0; i < 20; i++) {
        cx[i] = (float)i;
        cy[i] = 0.5f;
        zx[i] = 7.0f;
        zy[i] = 0.0f;
    }
    PlotSeries lone[3] = {{"empty", NULL, NULL, 0, 0},
                          {"nan", nan_x, nan_y, 4, 0},
                          {"point", px, py, 1, RED}};
    PlotSeries flat = {NULL, cx, cy, 20, RED};
    PlotSeries zero = {NULL, zx, zy, 20, RED}; // one spot: constant x and y = 0
    PlotPanel panels[5] = {{"lone", NULL, NULL, 0, lone, 3},
                           {"flat", "x", "y", 0, &flat, 1},
                           {"zero", NULL, NULL, 0, &zero, 1},
                           {"nothing", NULL, NULL, 1, NULL, 0},
                           {"log of nan", NULL, NULL, 1, lone, 2}};
    PlotArea a[5];
    uint8_t* rgb = render(panels, 5, "degenerate", a);

    // every axis is a proper interval around its data
    for (int k = 0; k < 5; k++) {
        cr_assert(isfinite(a[k].xmin) && isfinite(a[k].xmax) && a[k].xmin < a[k].xmax,
                  "panel %d x %g..%g", k, a[k].xmin, a[k].xmax);
        cr_assert(isfinite(a[k].ymin) && isfinite(a[k].ymax) && a[k].ymin < a[k].ymax,
                  "panel %d y %g..%g", k, a[k].ymin, a[k].ymax);
    }
    cr_assert(a[0].xmin < 3.0 && a[0].xmax > 3.0 && a[0].ymin < 2.0 && a[0].ymax > 2.0);
    cr_assert(a[1].ymin < 0.5 && a[1].ymax > 0.5);
    cr_assert(a[2].xmin < 7.0 && a[2].xmax > 7.0 && a[2].ymin < 0.0 && a[2].ymax > 0.0);
    cr_assert(a[3].ymin > 0.0 && a[4].ymin > 0.0, "log axis reaches 0 or below");

    // the lone point is a dot, the constant series a line
    cr_assert_eq(pixel_at(rgb, W, &a[0], 3.0, 2.0), RED, "lone point not drawn");
    cr_assert_eq(pixel_at(rgb, W, &a[1], 9.5, 0.5), RED, "constant series not drawn");
    cr_assert_eq(pixel_at(rgb, W, &a[2], 7.0, 0.0), RED, "single spot not drawn");
    free(rgb);
}

Test(plot, log_axis_spaces_decades_evenly)
{
    enum { N = 100 };
    float x[N], y[N];
    for (int i = 0; i < N; i++) {
        x[i] = (float)i;
        y[i] = (float)pow(10.0, -5.0 + 3.0 * i / (N - 1));
    }
    y[0] = 0.0f; // not drawable on a log axis: skipped
    y[1] = -1.0f;
    PlotSeries s = {NULL, x, y, N, RED};
    PlotPanel p = {"lr", "step", "lr", 1, &s, 1};
    PlotArea a;
    uint8_t* rgb = render(&p, 1, NULL, &a);

    cr_assert(a.log_y, "log_y not reported");
    cr_assert(a.ymin > 0.0 && a.ymin < 1.2e-5 && a.ymax > 1e-2, "y %g..%g", a.ymin, a.ymax);

    // equal ratios, equal distances
    double px, p5, p4, p2;
    cr_assert_eq(plot_map(&a, 0.0, 1e-5, &px, &p5), 0);
    cr_assert_eq(plot_map(&a, 0.0, 1e-4, &px, &p4), 0);
    cr_assert_eq(plot_map(&a, 0.0, 1e-2, &px, &p2), 0);
    cr_assert(p5 > p4 && p4 > p2, "decades out of order");
    cr_assert_float_eq(p5 - p4, (p5 - p2) / 3.0, 1e-6);
    cr_assert_eq(plot_map(&a, 0.0, 0.0, &px, &p2), -1, "0 mapped on a log axis");

    // the line follows the data
    for (int i = 10; i < N; i += 15) {
        cr_assert_eq(pixel_at(rgb, W, &a, x[i], y[i]), RED, "point %d not painted", i);
    }
    free(rgb);
}

Test(plot, palette_colours_differ)
{
    float x[2] = {0.0f, 10.0f}, y1[2] = {1.0f, 1.0f}, y2[2] = {2.0f, 2.0f};
    PlotSeries s[2] = {{NULL, x, y1, 2, 0}, {NULL, x, y2, 2, 0}};
    PlotPanel p = {NULL, NULL, NULL, 0, s, 2};
    PlotArea a;
    uint8_t* rgb = render(&p, 1, NULL, &a);

    uint32_t c1 = pixel_at(rgb, W, &a, 5.0, 1.0), c2 = pixel_at(rgb, W, &a, 5.0, 2.0);
    cr_assert_neq(c1, c2, "both series drawn in %06x", c1);
    uint32_t cs[2] = {c1, c2};
    for (int k = 0; k < 2; k++) {
        int r = cs[k] >> 16, g = cs[k] >> 8 & 255, b = cs[k] & 255;
        int hi = r > g ? (r > b ? r : b) : (g > b ? g : b);
        int lo = r < g ? (r < b ? r : b) : (g < b ? g : b);
        cr_assert(hi - lo >= 60, "series %d colour %06x is not saturated", k, cs[k]);
    }
    free(rgb);
}

Test(plot, legend_keeps_off_the_line)
{
    // a rising diagonal crosses the bottom-left and top-right corners
    fill_square();
    PlotSeries s = {"rising", qx, qx, NQ, RED};
    PlotPanel p = {"Legend", "x", "y", 0, &s, 1};
    PlotArea a;
    uint8_t* rgb = render(&p, 1, NULL, &a);

    // the legend's sample line is the only long horizontal run of the colour
    int found = 0, run_x = 0, run_y = 0;
    for (int y = a.y0; y < a.y1 && !found; y++) {
        int run = 0;
        for (int x = a.x0; x < a.x1; x++) {
            run = pixel(rgb, W, x, y) == RED ? run + 1 : 0;
            if (run >= 20) {
                found = 1;
                run_x = x - 10;
                run_y = y;
                break;
            }
        }
    }
    cr_assert(found, "no legend sample line in the plot area");

    // it sits in the top-left or bottom-right corner, away from the diagonal
    double u = (run_x - a.x0) / (double)(a.x1 - a.x0);
    double v = (a.y1 - run_y) / (double)(a.y1 - a.y0);
    cr_assert(fabs(u - v) > 0.4, "legend at (%.2f, %.2f) sits on the line", u, v);
    free(rgb);
}

// ----------------------------------------------------------------------------
// Layout

Test(plot, three_panels_make_a_grid_under_the_heading)
{
    fill_square();
    PlotSeries s = {NULL, qx, qy, NQ, RED};
    PlotPanel p[3] = {{NULL, "x", "y", 0, &s, 1}, {NULL, "x", "y", 0, &s, 1},
                      {NULL, "x", "y", 0, &s, 1}};
    PlotArea with[3], without[3];
    uint8_t* rgb = render(p, 3, "A heading", with);
    uint8_t* bare = render(p, 3, NULL, without);

    // two side by side, the third below both and wider than either
    for (int k = 0; k < 3; k++) {
        cr_assert(with[k].x0 >= 0 && with[k].x1 <= W && with[k].y0 >= 0 && with[k].y1 <= H,
                  "panel %d outside the picture", k);
    }
    cr_assert(with[0].x1 <= with[1].x0, "panels 0 and 1 overlap");
    cr_assert_eq(with[0].y0, with[1].y0);
    cr_assert(with[2].y0 > with[0].y1 && with[2].y0 > with[1].y1, "panel 2 not below");
    cr_assert(with[2].x1 - with[2].x0 > with[1].x1 - with[0].x0 - 100, "panel 2 narrow");

    // the heading pushes the panels down and is drawn in dark pixels above them;
    // without it (and without titles) that band stays empty
    cr_assert(with[0].y0 > without[0].y0 + 20, "heading took no room");
    int dark_with = 0, dark_without = 0;
    for (int x = 0; x < W; x++) {
        for (int y = 0; y < with[0].y0 - 12; y++) dark_with += (pixel(rgb, W, x, y) >> 16) < 80;
        for (int y = 0; y < without[0].y0 - 10; y++) {
            dark_without += (pixel(bare, W, x, y) >> 16) < 80;
        }
    }
    cr_assert(dark_with > 50, "heading has %d dark pixels", dark_with);
    cr_assert_eq(dark_without, 0, "%d dark pixels above untitled panels", dark_without);
    free(rgb);
    free(bare);
}
