// examples/cutile_engine.py, the training step with cuTile kernels (NVIDIA's
// cuda.tile), through tests/cutile_engine_check.py: with numpy alone it runs
// the Triton check's unit checks on the cuTile engine (tables, parameter
// packing, protocol: the host side is examples/tile_engine.py for both) and
// the cuTile engine's own (its kernel module offers the Triton one's launch
// functions, each planted bug's kernel has its switch, create refuses the
// mixed precisions and a machine without a CUDA device, saying so), the
// emulator's rules (examples/cutile_emu.py) and every kernel variant run on
// it, each output written and finite; where torch imports, also every
// activation and gradient of one step against the fp64 reference and where
// each planted bug shows first (on the GPU with cuda.tile, else on the
// emulator). Without torch the script SKIPs that part and says why. Its
// --compile-for 90 (cuda.tile and its compiler, no GPU) is make
// tile-compile: docs/outside_engines.md ("cuTile").
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

Test(cutile, engine_check_script_passes, .timeout = 900) {
    const char *py;
    ThRun r = th_python_script("import numpy", "tests/cutile_engine_check.py", &py);
    cr_expect_eq(r.status, 0, "tests/cutile_engine_check.py with %s exited %d:\n%s%s", py, r.status, r.out, r.err);
    cr_expect(strstr(r.out, "cutile_engine_check: ") && strstr(r.out, " passed, 0 failed"), "%s", r.out);
    // the checks that need numpy alone ran and passed
    cr_expect(strstr(r.out, "ok   create refuses an unknown loss") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "ok   cutile_kernels.py offers triton_kernels.py's launch functions") != NULL, "%s",
              r.out);
    cr_expect(strstr(r.out, "ok   every kernel a planted bug names is in cutile_kernels.py with a BUG switch") != NULL,
              "%s", r.out);
    cr_expect(strstr(r.out, "ok   emulator: refuses what cuTile leaves undefined or does not compile") != NULL, "%s",
              r.out);
    cr_expect(strstr(r.out, "ok   every kernel runs on the cuTile emulator, each output written and finite: 32 launch "
                            "sets") != NULL, "%s", r.out);
    if (strstr(r.out, "SKIP")) {   // no torch here: the skip says why, and create said what cuTile needs
        cr_expect(strstr(r.out, "SKIP the cuTile engine against the fp64 reference: ") != NULL, "%s", r.out);
        cr_expect(strstr(r.out, "ok   create without a CUDA device is refused, saying why") != NULL, "%s", r.out);
        fprintf(stderr, "test_cutile (%s): %s", py, strstr(r.out, "SKIP"));
    } else {   // the engine ran (GPU or emulator): the token-mean checks were among them
        cr_expect(strstr(r.out, "ok   fp32 token-mean: loss, every gradient") &&
                      strstr(r.out, "ok   fp64 token-mean: loss, every gradient") &&
                      strstr(r.out, "ok   --plant-bug token-mean-doc-grad (token-mean): the loss right, first off at "
                                    "dacts/logits"),
                  "the token-mean checks did not all run and pass:\n%s", r.out);
    }
    th_run_free(&r);
}

// scripts/cutile_toolchain.sh install: a folder made as fetch makes it (a
// stand-in tileiras that answers --version, ptxas, libnvvm, a cuda-tile
// wheel) is unpacked, the wheel installed and the exports printed; a folder
// without the compiler is refused naming the file and how to make it;
// bad arguments exit 2.
static ThRun toolchain(const char *args) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "bash scripts/cutile_toolchain.sh %s", args);
    char *const argv[] = {"/bin/sh", "-c", cmd, NULL};
    return th_run(argv);
}

Test(cutile, toolchain_install_unpacks_and_prints_the_exports, .timeout = 120) {
    const char *py = th_python("import pip");
    if (!py || system("command -v xz >/dev/null") != 0) {
        fprintf(stderr, "SKIP: needs a Python with pip, and xz\n");
        cr_skip_test("no pip or xz");
    }
    // the commands below run in the case's folder: a relative interpreter path gets the cwd
    char pyabs[1024], cwd[800];
    cr_assert(getcwd(cwd, sizeof cwd));
    snprintf(pyabs, sizeof pyabs, "%s%s%s", strchr(py, '/') && py[0] != '/' ? cwd : "",
             strchr(py, '/') && py[0] != '/' ? "/" : "", py);
    const char *dir = th_case_dir("cutile_toolchain");
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "set -e; cd %s; mkdir -p tc w/cuda/tile w/cuda_tile-0.0.1.dist-info; "
             "printf '#!/bin/sh\\necho \"tileiras stand-in 13.4\"\\n' >tileiras; xz -c tileiras >tc/tileiras.xz; "
             "echo ptxas | xz -c >tc/ptxas.xz; echo nvvm | xz -c >tc/libnvvm.so.4.xz; "
             "echo '__version__ = \"0.0.1\"' >w/cuda/tile/__init__.py; : >w/cuda/__init__.py; "
             "printf 'Metadata-Version: 2.1\\nName: cuda-tile\\nVersion: 0.0.1\\n' >w/cuda_tile-0.0.1.dist-info/METADATA; "
             "printf 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n' "
             ">w/cuda_tile-0.0.1.dist-info/WHEEL; : >w/cuda_tile-0.0.1.dist-info/RECORD; "
             "%s -c \"import shutil; shutil.make_archive('tc/w', 'zip', 'w')\"; "
             "mv tc/w.zip tc/cuda_tile-0.0.1-py3-none-any.whl",
             dir, pyabs);
    cr_assert_eq(system(cmd), 0, "could not make the stand-in toolchain");
    char args[1024];
    snprintf(args, sizeof args, "install %s/tc %s/prefix", dir, dir);
    setenv("PYTHON", pyabs, 1);
    ThRun r = toolchain(args);
    unsetenv("PYTHON");
    cr_expect_eq(r.status, 0, "install exited %d:\n%s%s", r.status, r.out, r.err);
    char want[1200];
    snprintf(want, sizeof want, "export PATH=\"%s/prefix/nvidia/cu13/bin:$PATH\"", dir);
    cr_expect(strstr(r.out, want) && strstr(r.out, "unset CUDA_HOME"), "the exports:\n%s", r.out);
    snprintf(cmd, sizeof cmd,
             "cd %s/prefix && test -x nvidia/cu13/bin/tileiras && test -x nvidia/cu13/bin/ptxas && "
             "grep -q nvvm nvidia/cu13/lib/libnvvm.so.4 && test -f site/cuda/tile/__init__.py",
             dir);
    cr_expect_eq(system(cmd), 0, "not unpacked as expected under %s/prefix", dir);
    th_run_free(&r);

    // without the compiler: refused, naming the file and the command that makes it
    snprintf(cmd, sizeof cmd, "rm %s/tc/tileiras.xz", dir);
    cr_assert_eq(system(cmd), 0);
    r = toolchain(args);
    cr_expect_eq(r.status, 1, "install without tileiras exited %d:\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(r.err, "tileiras.xz is missing") && strstr(r.err, "cutile_toolchain.sh fetch"), "%s", r.err);
    cr_expect_eq(r.out[0], '\0', "nothing to eval is printed on failure: %s", r.out);
    th_run_free(&r);
}

Test(cutile, toolchain_bad_arguments_exit_2) {
    const char *bad[] = {"", "fetch", "install onlyone", "bogus x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ThRun r = toolchain(bad[i]);
        cr_expect_eq(r.status, 2, "'%s' exited %d:\n%s", bad[i], r.status, r.err);
        cr_expect(strstr(r.err, "see --help") != NULL, "'%s': %s", bad[i], r.err);
        th_run_free(&r);
    }
}
