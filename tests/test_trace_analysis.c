// Traces ready for analysis: the long layout of per-tensor errors read like
// the max_err maps, `trace validate` refusing inconsistent traces, `trace
// export --csv`, and `trace diff` on per-tensor errors with a tolerance.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define TRACE(...) th_tool("trace", __VA_ARGS__, NULL)

// A compare trace in the long layout: two steps, grads error of
// layer0.attn_wq scaled by `k` in step 2.
static const char *long_trace(const char *name, double k) {
    static char buf[4][4096];
    static int n;
    char *t = buf[n++ % 4];
    snprintf(t, 4096,
             "{\"format\": \"microgpt-trace\", \"version\": 1, \"kind\": \"compare\", \"complete\": true,\n"
             " \"engines\": [{\"name\": \"scalar\", \"precision\": \"fp64\"}, {\"name\": \"cuda\", \"precision\": \"fp32\"}],\n"
             " \"steps\": [\n"
             "  {\"step\": 1, \"lr\": 0.01, \"loss\": [3.3, 3.3], \"ok\": true, \"errors\": [\n"
             "    {\"quantity\": \"loss\", \"max_abs\": 1e-8, \"max_rel\": 3e-9, \"n_bad\": 0},\n"
             "    {\"quantity\": \"grads\", \"tensor\": \"layer0.attn_wq\", \"max_abs\": 2e-7, \"max_rel\": 1e-6, \"n_bad\": 0}]},\n"
             "  {\"step\": 2, \"lr\": 0.008, \"loss\": [3.4, 3.4], \"ok\": true, \"errors\": [\n"
             "    {\"quantity\": \"loss\", \"max_abs\": 2e-8, \"max_rel\": 6e-9, \"n_bad\": 0},\n"
             "    {\"quantity\": \"grads\", \"tensor\": \"layer0.attn_wq\", \"max_abs\": %.17g, \"max_rel\": null, \"n_bad\": 3},\n"
             "    {\"quantity\": \"m\", \"tensor\": \"wte\", \"max_abs\": 0}]}]}\n",
             3e-7 * k);
    return th_write_temp(name, t, strlen(t));
}

Test(analysis, the_long_layout_is_read_inspected_and_exported) {
    const char *p = long_trace("long.json", 1);
    ThRun r = TRACE("validate", p);
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "valid compare trace, 2 steps, complete"), "%s", r.out);
    th_run_free(&r);
    r = TRACE("inspect", p);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "layer0.attn_wq"), "inspect shows the tensor's errors: %s", r.out);
    th_run_free(&r);
    r = TRACE("export", "--csv", p, "--errors");
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_str_eq(r.out,
                     "step,quantity,tensor,max_abs,max_rel,n_bad,err_rms,rms,ref_err_rms,bound\n"
                     "1,loss,loss,1e-08,3e-09,0,,,,\n"
                     "1,grads,layer0.attn_wq,2e-07,1e-06,0,,,,\n"
                     "2,loss,loss,2e-08,6e-09,0,,,,\n"
                     "2,grads,layer0.attn_wq,3e-07,,3,,,,\n"
                     "2,m,wte,0,,,,,,\n");
    th_run_free(&r);
    r = TRACE("export", "--csv", p);
    cr_expect_str_eq(r.out, "step,lr,loss_scalar,loss_cuda,time_s_scalar,time_s_cuda,ok\n"
                            "1,0.01,3.3,3.3,,,true\n2,0.008,3.4,3.4,,,true\n");
    th_run_free(&r);
    // --out: written there; the trace itself is refused
    char out[4200];
    snprintf(out, sizeof out, "%s/steps.csv", th_temp_dir());
    r = TRACE("export", "--csv", p, "--out", out);
    cr_expect_eq(r.status, 0, "%s", r.err);
    th_run_free(&r);
    char *csv = th_read_file(out, NULL);
    cr_expect(!strncmp(csv, "step,lr,", 8), "%s", csv);
    free(csv);
    r = TRACE("export", "--csv", p, "--out", p);
    cr_expect_eq(r.status, 2);
    cr_expect(strstr(r.err, "input"), "%s", r.err);
    th_run_free(&r);
}

// Each trace below is wrong in one way; validate names it and exits 1.
Test(analysis, inconsistent_traces_are_refused) {
    static const struct { const char *why, *json; } bad[] = {
        {"does not follow",
         "{\"format\":\"microgpt-trace\",\"version\":1,\"kind\":\"train\",\"steps\":[{\"step\":2,\"loss\":1},{\"step\":1,\"loss\":1}]}"},
        {"two records",
         "{\"format\":\"microgpt-trace\",\"version\":1,\"kind\":\"compare\",\"steps\":[{\"step\":1,\"loss\":[1,1],\"errors\":["
         "{\"quantity\":\"grads\",\"tensor\":\"wte\",\"max_abs\":1},{\"quantity\":\"grads\",\"tensor\":\"wte\",\"max_abs\":2}]}]}"},
        {"quantity is not one of",
         "{\"format\":\"microgpt-trace\",\"version\":1,\"kind\":\"compare\",\"steps\":[{\"step\":1,\"loss\":[1,1],\"errors\":["
         "{\"quantity\":\"gradz\",\"max_abs\":1}]}]}"},
        {"max_abs is not a number >= 0",
         "{\"format\":\"microgpt-trace\",\"version\":1,\"kind\":\"compare\",\"steps\":[{\"step\":1,\"loss\":[1,1],\"errors\":["
         "{\"quantity\":\"loss\",\"max_abs\":-1}]}]}"},
        {"without a stop_reason",
         "{\"format\":\"microgpt-trace\",\"version\":1,\"kind\":\"train\",\"complete\":false,\"steps\":[]}"},
        {"stop_step is not the last step",
         "{\"format\":\"microgpt-trace\",\"version\":1,\"kind\":\"train\",\"complete\":false,\"stop_reason\":\"x\","
         "\"stop_step\":5,\"steps\":[{\"step\":1,\"loss\":1}]}"},
        {"complete, but 1 steps of the 3",
         "{\"format\":\"microgpt-trace\",\"version\":1,\"kind\":\"train\",\"complete\":true,\"settings\":{\"steps\":3},"
         "\"steps\":[{\"step\":1,\"loss\":1}]}"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu.json", i);
        const char *p = th_write_temp(name, bad[i].json, strlen(bad[i].json));
        ThRun r = TRACE("validate", p);
        cr_expect_eq(r.status, 1, "%s: exit %d", bad[i].why, r.status);
        cr_expect(strstr(r.out, bad[i].why), "should say '%s': %s", bad[i].why, r.out);
        th_run_free(&r);
    }
}

Test(analysis, diff_compares_per_tensor_errors_with_a_tolerance) {
    const char *a = long_trace("a.json", 1), *same = long_trace("same.json", 1), *b = long_trace("b.json", 2);
    ThRun r = TRACE("diff", a, same);
    cr_expect_eq(r.status, 0, "%s", r.out);
    th_run_free(&r);
    r = TRACE("diff", a, b);
    cr_expect_eq(r.status, 1, "a doubled error must count: %s", r.out);
    cr_expect(strstr(r.out, "layer0.attn_wq") && strstr(r.out, "worse"), "%s", r.out);
    cr_expect(strstr(r.out, "1 worse"), "%s", r.out);
    th_run_free(&r);
    r = TRACE("diff", a, b, "--error-tolerance", "1.5");
    cr_expect_eq(r.status, 0, "within a factor 2.5: %s", r.out);
    th_run_free(&r);
    r = TRACE("diff", b, a, "--error-tolerance=0.5");
    cr_expect_eq(r.status, 1, "%s", r.out);
    cr_expect(strstr(r.out, "better"), "%s", r.out);
    th_run_free(&r);
}

// The plot at the edges: one step, losses near the largest double, nulls.
Test(analysis, plot_axes_are_sane_at_any_size) {
    static const char one[] = "{\"format\":\"microgpt-trace\",\"version\":1,\"kind\":\"train\",\"steps\":[{\"step\":1,\"loss\":3.3}]}";
    static const char huge[] = "{\"format\":\"microgpt-trace\",\"version\":1,\"kind\":\"train\",\"steps\":["
                               "{\"step\":1,\"loss\":1e308},{\"step\":2,\"loss\":1.7e308},{\"step\":3,\"loss\":-1.7e308},"
                               "{\"step\":4,\"loss\":null},{\"step\":5,\"loss\":3}]}";
    const char *p1 = th_write_temp("one.json", one, strlen(one)), *p2 = th_write_temp("huge.json", huge, strlen(huge));
    char svg[4200];
    snprintf(svg, sizeof svg, "%s/plot.svg", th_temp_dir());
    ThRun r = TRACE("plot", p1, "--svg", svg);
    cr_assert_eq(r.status, 0, "%s", r.err);
    th_run_free(&r);
    char *s = th_read_file(svg, NULL);
    cr_expect(strstr(s, "text-anchor=\"middle\">1</text>"), "a 1-step run has the tick 1");
    cr_expect(!strstr(s, ">0.2<") && !strstr(s, ">0<") && !strstr(s, ">2<"), "no 0..2 axis for one step");
    free(s);
    const char *lg[2] = {"--width=900", "--log"};
    for (int k = 0; k < 2; k++) {
        r = TRACE("plot", p2, "--svg", svg, lg[k]);
        cr_assert_eq(r.status, 0, "%s", r.err);
        th_run_free(&r);
        s = th_read_file(svg, NULL);
        cr_expect(!strstr(s, "nan") && !strstr(s, "NaN") && !strstr(s, "inf"), "non-finite numbers in the SVG");
        free(s);
        r = TRACE("plot", p2, lg[k][2] == 'l' ? "--log" : "--width=80");
        cr_expect_eq(r.status, 0, "%s", r.err);
        th_run_free(&r);
    }
}

// Title, smoothing, tolerance line, failing and excused steps marked.
Test(analysis, plot_title_marks_tolerance_and_smoothing) {
    static const char cmp[] =
        "{\"format\":\"microgpt-trace\",\"version\":1,\"kind\":\"compare\",\"mode\":\"lockstep\",\"verdict\":\"fail\","
        "\"engines\":[{\"name\":\"scalar\",\"precision\":\"fp64\"},{\"name\":\"cuda\",\"precision\":\"fp32\"}],"
        "\"tolerances\":{\"grads\":{\"atol\":1e-6,\"rtol\":1e-4}},\"excused_steps\":[{\"step\":3,\"reason\":\"relu\"}],"
        "\"steps\":[{\"step\":1,\"loss\":[3,3],\"ok\":true,\"max_err\":{\"logits\":1e-7,\"wte.grad\":1e-8}},"
        "{\"step\":2,\"loss\":[2,2],\"ok\":false,\"max_err\":{\"logits\":1e-5,\"wte.grad\":1e-5}},"
        "{\"step\":3,\"loss\":[4,4],\"ok\":true,\"max_err\":{\"logits\":1e-7,\"wte.grad\":1e-8}},"
        "{\"step\":4,\"loss\":[3,3],\"ok\":true,\"max_err\":{\"logits\":1e-7,\"wte.grad\":1e-8}}]}";
    const char *p = th_write_temp("marks.json", cmp, strlen(cmp));
    ThRun r = TRACE("plot", p, "--smooth", "3");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "scalar fp64 vs cuda fp32, lockstep, verdict fail, 4 steps"), "title: %s", r.out);
    cr_expect(strstr(r.out, "(mean of 3)"), "smoothing in the legend: %s", r.out);
    cr_expect(strstr(r.out, "grads atol 1e-06"), "the tolerance line: %s", r.out);
    cr_expect(strstr(r.out, "F failing step, E excused step"), "marks: %s", r.out);
    const char *m = strchr(r.out, 'F');
    cr_expect(m && strchr(m, 'E'), "both marks under the axis: %s", r.out);
    th_run_free(&r);
    char svg[4200];
    snprintf(svg, sizeof svg, "%s/marks.svg", th_temp_dir());
    r = TRACE("plot", p, "--svg", svg);
    cr_assert_eq(r.status, 0, "%s", r.err);
    th_run_free(&r);
    char *s = th_read_file(svg, NULL);
    cr_expect(strstr(s, "<title>") && strstr(s, "verdict fail"), "the SVG has the title");
    cr_expect(strstr(s, "stroke=\"#d62728\" stroke-opacity") && strstr(s, "stroke=\"#ff9f1c\" stroke-opacity"),
              "the SVG marks failing and excused steps");
    cr_expect(strstr(s, "stroke-dasharray=\"2 3\""), "the SVG draws the tolerance line");
    free(s);
    // a window needs at least one step
    r = TRACE("plot", p, "--smooth", "0");
    cr_expect_eq(r.status, 2, "--smooth 0 is refused");
    th_run_free(&r);
}

// An interrupted run's trace says so first thing.
Test(analysis, inspect_says_when_a_run_stopped_early) {
    static const char t[] = "{\"format\":\"microgpt-trace\",\"version\":1,\"kind\":\"train\",\"complete\":false,"
                            "\"stop_reason\":\"interrupted by SIGINT\",\"stop_step\":1,\"steps\":[{\"step\":1,\"loss\":3}]}";
    const char *p = th_write_temp("stopped.json", t, strlen(t));
    ThRun r = TRACE("inspect", p);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "INCOMPLETE: the run stopped after step 1: interrupted by SIGINT"), "%s", r.out);
    th_run_free(&r);
    r = TRACE("inspect", p, "--json");
    cr_expect(strstr(r.out, "\"complete\":\tfalse") || strstr(r.out, "\"complete\": false"), "%s", r.out);
    th_run_free(&r);
}
