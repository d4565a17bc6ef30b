"""The bad-input matrix: every option of every command, given a value it must refuse.

Each case runs the real CLI in-process and checks the contract of a refusal: the expected exit
code (1: a value the user can fix, 2: a usage error such as a missing option or a value of the
wrong type), exactly one line on stderr that starts with ``error:`` and contains the expected
words, no traceback, nothing on stdout, and nothing written, overwritten or removed under the
results and datasets roots and the test's folder (compared file by file: names, sizes, mtimes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from marlbench.cli import main

ENV = "rware-tiny-2ag"
RUN = ["run", "--algo", "bc", "--env", ENV, "--dataset", "expert-4ep", "-q"]
SWEEP = ["sweep", "--algos", "bc", "--envs", ENV, "--datasets", "expert-4ep", "--seeds", "0",
         "-q"]
COLLECT = ["datasets", "collect", "--env", ENV, "--quality", "poor", "-q"]
CMP = ["compare", "{cmp}"]
REPRO = ["reproduce", "mads4-table1"]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# (id, argv, exit code, words the error line must contain). Placeholders in {braces} are
# paths made by the `world` fixture.
CASES = [
    # --- marlbench (top level) ----------------------------------------------------------------
    ("cmd-unknown", ["rnu"], 2, "No such command 'rnu'"),
    ("cmd-bad-option", ["--frobnicate"], 2, "No such option"),
    # --- run ------------------------------------------------------------------------------------
    ("run-algo-missing", ["run", "--env", ENV], 2, "Missing option '--algo'"),
    ("run-algo-unknown", ["run", "--algo", "bcx", "--env", ENV, "-q"], 1,
     "unknown algorithm 'bcx'. Did you mean 'bc'"),
    ("run-env-missing", ["run", "--algo", "bc"], 2, "Missing option '--env'"),
    ("run-env-unknown", ["run", "--algo", "bc", "--env", "rware-tiny-3agg", "-q"], 1,
     "unknown environment 'rware-tiny-3agg'"),
    ("run-dataset-typo", [*RUN, "--dataset", "exprt"], 1, "Did you mean 'expert'"),
    ("run-dataset-no-file", [*RUN, "--dataset", "{tmp}/missing.h5"], 1, "does not exist"),
    ("run-dataset-corrupt", [*RUN, "--dataset", "{junk}"], 1, "junk.h5"),
    ("run-dataset-folder", [*RUN, "--dataset", "{empty}.h5"], 1, "is a folder, not a dataset"),
    ("run-dataset-online", ["run", "--algo", "mappo", "--env", ENV, "--dataset", "expert",
                            "-q"], 1, "--dataset does not apply"),
    ("run-seed-negative", [*RUN, "--seed", "-1"], 1, "--seed must be an integer from 0 to"),
    ("run-seed-text", [*RUN, "--seed", "x"], 2, "'--seed': 'x' is not a valid integer"),
    ("run-seed-huge", [*RUN, "--seed", str(2**70)], 1, "--seed must be an integer from 0 to"),
    ("run-steps-zero", [*RUN, "--steps", "0"], 1, "--steps must be a positive integer"),
    ("run-steps-negative", [*RUN, "--steps", "-5"], 1, "--steps must be a positive integer"),
    ("run-steps-float", [*RUN, "--steps", "1.5"], 2, "'--steps': '1.5' is not a valid integer"),
    ("run-eval-episodes-zero", [*RUN, "--eval-episodes", "0"], 1,
     "--eval-episodes must be a positive integer"),
    ("run-eval-parallel-zero", [*RUN, "--eval-parallel", "0"], 1,
     "--eval-parallel must be a positive integer"),
    ("run-eval-parallel-negative", [*RUN, "--eval-parallel", "-3"], 1,
     "--eval-parallel must be a positive integer"),
    ("run-episodes-zero", [*RUN, "--dataset", "poor", "--episodes", "0"], 1,
     "--episodes must be a positive integer"),
    ("run-episodes-negative", [*RUN, "--dataset", "poor", "--episodes", "-1"], 1,
     "--episodes must be a positive integer"),
    ("run-device-unknown", [*RUN, "--device", "tpu9"], 1, "invalid --device 'tpu9'"),
    ("run-device-empty", [*RUN, "--device", ""], 1, "--device must name a torch device"),
    ("run-threads-zero", [*RUN, "--threads", "0"], 1, "--threads must be a positive integer"),
    ("run-threads-negative", [*RUN, "--threads", "-2"], 1,
     "--threads must be a positive integer"),
    ("run-set-no-equals", [*RUN, "--set", "lr"], 1, "--set expects key=value"),
    ("run-set-unknown-key", [*RUN, "--set", "hiden=3"], 1, "Did you mean 'hidden'"),
    ("run-set-wrong-type", [*RUN, "--set", "lr=fast"], 1, "lr expects float"),
    ("run-set-nan", [*RUN, "--set", "lr=nan"], 1, "lr must be finite"),
    ("run-set-inf", [*RUN, "--set", "grad_clip=inf"], 1, "grad_clip must be finite"),
    ("run-set-negative-clip", [*RUN, "--set", "grad_clip=-1"], 1, "grad_clip must be > 0"),
    ("run-set-zero-lr", [*RUN, "--set", "lr=0"], 1, "lr must be"),
    ("run-set-zero-steps", [*RUN, "--set", "steps=0"], 1, "steps must be > 0"),
    ("run-set-zero-batch", [*RUN, "--set", "batch_size=0"], 1, "batch_size must be > 0"),
    ("run-set-bad-bool", [*RUN, "--set", "use_state=maybe"], 1, "use_state expects bool"),
    ("run-set-gamma", ["run", "--algo", "omar", "--env", ENV, "--dataset", "expert-4ep", "-q",
                       "--set", "gamma=1.5"], 1, "gamma"),
    ("run-set-tau-zero", ["run", "--algo", "omiga", "--env", ENV, "--dataset", "expert-4ep",
                          "-q", "--set", "tau=0"], 1, "tau"),
    ("run-set-dropout-one", ["run", "--algo", "madt", "--env", ENV, "--dataset", "expert-4ep",
                             "-q", "--set", "dropout=1"], 1, "dropout must be in [0, 1)"),
    ("run-set-literal", ["run", "--algo", "mads4", "--env", ENV, "--dataset", "expert-4ep",
                         "-q", "--set", "kernel=fft"], 1, "kernel must be one of nplr, s4d"),
    ("run-results-is-file", [*RUN, "--results", "{file}"], 1,
     "cannot write the results folder"),
    ("run-results-under-file", [*RUN, "--results", "{file}/sub"], 1, "is a file, not a folder"),
    ("run-results-exist", [*RUN, "--results", "{done}"], 1,
     "results already exist at"),
    ("run-datasets-is-file", [*RUN, "--dataset", "poor", "--datasets", "{file}"], 1,
     "cannot write the datasets folder"),
    ("run-greedy-value", [*RUN, "--greedy=yes"], 2, "Option '--greedy' does not take a value"),
    ("run-overwrite-value", [*RUN, "--overwrite=1"], 2, "does not take a value"),
    ("run-quiet-value", [*RUN, "--quiet=no"], 2, "does not take a value"),
    # --- sweep ----------------------------------------------------------------------------------
    ("run-log-unknown", [*RUN, "--log", "tensorbord"], 1, "Did you mean 'tensorboard'"),
    ("run-label-path", [*RUN, "--label", "a/b"], 1, "--label must be a folder name"),
    ("run-label-dots", [*RUN, "--label", ".."], 1, "--label must be a folder name"),
    ("sweep-algos-missing", ["sweep", "--envs", ENV], 2, "Missing option '--algos'"),
    ("sweep-algos-empty", [*SWEEP, "--algos", ","], 1, "at least one algorithm"),
    ("sweep-algos-unknown", [*SWEEP, "--algos", "bc,mads5"], 1, "Did you mean 'mads4'"),
    ("sweep-envs-missing", ["sweep", "--algos", "bc"], 2, "Missing option '--envs'"),
    ("sweep-envs-unknown", [*SWEEP, "--envs", "rware-tiny-2a"], 1, "unknown environment"),
    ("sweep-datasets-typo", [*SWEEP, "--datasets", "exprt"], 1, "Did you mean 'expert'"),
    ("sweep-seeds-empty", [*SWEEP, "--seeds", ""], 1, "--seeds is empty"),
    ("sweep-seeds-text", [*SWEEP, "--seeds", "a"], 1, "bad --seeds"),
    ("sweep-seeds-reversed", [*SWEEP, "--seeds", "4-2"], 1, "bad --seeds range"),
    ("sweep-seeds-negative", [*SWEEP, "--seeds", "-1"], 1, "bad --seeds"),
    ("sweep-seeds-huge", [*SWEEP, "--seeds", str(2**70)], 1, "each of --seeds must be"),
    ("sweep-seeds-too-many", [*SWEEP, "--seeds", "0-99999999"], 1, "more than 10000 seeds"),
    ("sweep-jobs-zero", [*SWEEP, "--jobs", "0"], 1, "--jobs must be at least 1"),
    ("sweep-jobs-negative", [*SWEEP, "-j", "-1"], 1, "--jobs must be at least 1"),
    ("sweep-steps-zero", [*SWEEP, "--steps", "0"], 1, "--steps must be a positive integer"),
    ("sweep-eval-episodes-zero", [*SWEEP, "--eval-episodes", "0"], 1,
     "--eval-episodes must be a positive integer"),
    ("sweep-eval-parallel-zero", [*SWEEP, "--eval-parallel", "0"], 1,
     "--eval-parallel must be a positive integer"),
    ("sweep-episodes-zero", [*SWEEP, "--datasets", "poor", "--episodes", "0"], 1,
     "--episodes must be a positive integer"),
    ("sweep-threads-zero", [*SWEEP, "--threads", "0"], 1,
     "--threads must be a positive integer"),
    ("sweep-device-unknown", [*SWEEP, "--device", "tpu9"], 1, "invalid --device 'tpu9'"),
    ("sweep-set-nan", [*SWEEP, "--set", "lr=nan"], 1, "lr must be finite"),
    ("sweep-set-negative-clip", [*SWEEP, "--set", "grad_clip=-1"], 1, "grad_clip must be > 0"),
    ("sweep-set-unknown-key", [*SWEEP, "--set", "hiden=3"], 1, "Did you mean 'hidden'"),
    ("sweep-results-is-file", [*SWEEP, "--results", "{file}"], 1,
     "cannot write the results folder"),
    ("sweep-datasets-root-is-file", [*SWEEP, "--datasets", "poor", "--datasets-root", "{file}"],
     1, "cannot write the datasets folder"),
    ("sweep-greedy-value", [*SWEEP, "--greedy=1"], 2, "does not take a value"),
    ("sweep-dry-run-value", [*SWEEP, "--dry-run=1"], 2, "does not take a value"),
    # --- compare --------------------------------------------------------------------------------
    ("sweep-log-unknown", [*SWEEP, "--log", "nope"], 1, "unknown logger 'nope'"),
    ("sweep-executor-unknown", [*SWEEP, "--executor", "dask"], 2,
     "'--executor': 'dask' is not one of"),
    ("sweep-ray-no-cluster", [*SWEEP, "--executor", "ray", "--address", "127.0.0.1:1"], 1,
     "ray"),
    # --- reproduce (a preset through the sweep machinery) -----------------------------------
    ("sweep-address-without-ray", [*SWEEP, "--address", "1.2.3.4:5"], 1,
     "--address applies to --executor ray only"),
    ("reproduce-unknown", ["reproduce", "mads4-tabel1"], 1, "unknown preset 'mads4-tabel1'"),
    ("reproduce-seeds-text", [*REPRO, "--seeds", "x", "--dry-run"], 1,
     "bad --seeds"),
    ("reproduce-budget-unknown", [*REPRO, "--budget", "gpu"], 2,
     "'--budget': 'gpu' is not one of"),
    ("reproduce-jobs-zero", [*REPRO, "--jobs", "0"], 1,
     "--jobs must be at least 1"),
    ("reproduce-steps-zero", [*REPRO, "--steps", "0", "--dry-run"], 1,
     "--steps must be a positive integer"),
    ("reproduce-set-nan", [*REPRO, "--set", "lr=nan", "--dry-run"], 1,
     "lr must be finite"),
    ("reproduce-eval-episodes-zero", [*REPRO, "--eval-episodes", "0"], 1,
     "--eval-episodes must be a positive integer"),
    ("reproduce-eval-parallel-zero", [*REPRO, "--eval-parallel", "0"], 1,
     "--eval-parallel must be a positive integer"),
    ("reproduce-episodes-zero", [*REPRO, "--episodes", "0"], 1,
     "--episodes must be a positive integer"),
    ("reproduce-threads-zero", [*REPRO, "--threads", "0"], 1,
     "--threads must be a positive integer"),
    ("reproduce-device-unknown", [*REPRO, "--device", "tpu9", "--dry-run"], 1,
     "invalid --device 'tpu9'"),
    ("reproduce-results-is-file", [*REPRO, "--results", "{file}", "--dry-run"], 1,
     "cannot write the results folder"),
    ("reproduce-datasets-root-is-file", [*REPRO, "--datasets-root", "{file}", "-q"], 1,
     "cannot write the datasets folder"),
    ("reproduce-report-is-folder", [*REPRO, "--report", "{empty}", "--dry-run"], 1,
     "cannot write the reproduction report"),
    ("reproduce-executor-unknown", [*REPRO, "--executor", "dask"], 2,
     "'--executor': 'dask' is not one of"),
    ("reproduce-address-without-ray", [*REPRO, "--address", "1.2.3.4:5", "--dry-run"], 1,
     "--address applies to --executor ray only"),
    ("reproduce-log-unknown", [*REPRO, "--log", "nope", "--dry-run"], 1, "unknown logger 'nope'"),
    ("reproduce-greedy-value", [*REPRO, "--greedy=1"], 2, "does not take a value"),
    ("reproduce-quiet-value", [*REPRO, "--quiet=1"], 2, "does not take a value"),
    ("compare-results-missing", ["compare", "{tmp}/nowhere"], 1, "does not exist"),
    ("compare-results-empty", ["compare", "{tmp}/empty"], 1, "no completed runs"),
    ("compare-envs-unknown", [*CMP, "--envs", "rware-tiny-2a"], 1, "Did you mean"),
    ("compare-algos-unknown", [*CMP, "--algos", "bcc"], 1, "Did you mean 'bc'"),
    ("compare-datasets-unknown", [*CMP, "--datasets", "exprt"], 1, "Did you mean 'expert'"),
    ("compare-pairs-syntax", [*CMP, "--pairs", "bc-madt"], 1, "bad --pairs item"),
    ("compare-pairs-self", [*CMP, "--pairs", "bc:bc"], 1, "compares bc with itself"),
    ("compare-pairs-unknown", [*CMP, "--pairs", "bc:nope"], 1, "unknown algorithm in --pairs"),
    ("compare-format-unknown", [*CMP, "--format", "xml"], 2, "'--format': 'xml' is not one of"),
    ("compare-out-is-file", [*CMP, "--out", "{file}"], 1, "cannot write the report folder"),
    ("compare-reps-negative", [*CMP, "--reps", "-1"], 1, "--reps must be non-negative"),
    ("compare-reps-text", [*CMP, "--reps", "many"], 2, "is not a valid integer"),
    ("compare-seed-negative", [*CMP, "--seed", "-1"], 1, "--seed must be an integer from 0 to"),
    ("compare-seed-huge", [*CMP, "--seed", str(2**70)], 1, "--seed must be an integer from 0"),
    ("compare-holm-family-unknown", [*CMP, "--holm-family", "all"], 2,
     "'--holm-family': 'all' is not one of"),
    ("compare-alpha-zero", [*CMP, "--alpha", "0"], 1, "--alpha must be between 0 and 1"),
    ("compare-alpha-one", [*CMP, "--alpha", "1"], 1, "--alpha must be between 0 and 1"),
    ("compare-alpha-nan", [*CMP, "--alpha", "nan"], 1, "--alpha must be between 0 and 1"),
    ("compare-no-plots-value", [*CMP, "--no-plots=1"], 2, "does not take a value"),
    # --- datasets -------------------------------------------------------------------------------
    ("collect-env-missing", ["datasets", "collect", "--quality", "poor"], 2,
     "Missing option '--env'"),
    ("collect-env-unknown", ["datasets", "collect", "--env", "rware-tiny-2a", "--quality",
                             "poor"], 1, "unknown environment"),
    ("collect-quality-missing", ["datasets", "collect", "--env", ENV], 2,
     "Missing option '--quality'"),
    ("collect-quality-unknown", [*COLLECT, "--quality", "expret"], 1, "Did you mean 'expert'"),
    ("collect-episodes-zero", [*COLLECT, "--episodes", "0"], 1,
     "--episodes must be a positive integer"),
    ("collect-episodes-negative", [*COLLECT, "--episodes", "-4"], 1,
     "--episodes must be a positive integer"),
    ("collect-seed-negative", [*COLLECT, "--seed", "-1"], 1,
     "--seed must be an integer from 0 to 4294967295"),
    ("collect-seed-huge", [*COLLECT, "--seed", str(2**70), "--episodes", "1"], 1,
     "--seed must be an integer from 0 to"),
    ("collect-out-exists", [*COLLECT, "--out", "{junk}"], 1, "already exists"),
    ("collect-out-is-folder", [*COLLECT, "--out", "{tmp}"], 1, "it is a folder"),
    ("collect-out-under-file", [*COLLECT, "--out", "{file}/x.h5"], 1,
     "cannot write the datasets folder"),
    ("collect-datasets-is-file", [*COLLECT, "--datasets", "{file}"], 1,
     "cannot write the datasets folder"),
    ("collect-overwrite-value", [*COLLECT, "--overwrite=1"], 2, "does not take a value"),
    ("list-datasets-is-file", ["datasets", "list", "--datasets", "{file}"], 1,
     "is a file, not a folder"),
    ("info-missing-arg", ["datasets", "info"], 2, "Missing argument 'TARGET'"),
    ("info-name-typo", ["datasets", "info", f"{ENV}/exprt-4ep"], 1,
     "Did you mean 'expert-4ep'"),
    ("info-env-typo", ["datasets", "info", "rware-tiny-2a/expert-4ep"], 1,
     "Did you mean 'rware-tiny-2ag'"),
    ("info-not-a-target", ["datasets", "info", "expert"], 1, "neither a dataset file nor ENV/NAME"),
    ("info-corrupt", ["datasets", "info", "{junk}"], 1, "junk.h5"),
    ("info-folder", ["datasets", "info", "{empty}"], 1, "is a folder, not a dataset file"),
    ("info-no-file", ["datasets", "info", "{tmp}/missing.h5"], 1, "missing.h5"),
    ("info-datasets-is-file", ["datasets", "info", f"{ENV}/expert-4ep", "--datasets",
                               "{file}"], 1, "holds no datasets"),
    ("verify-missing-arg", ["datasets", "verify"], 2, "Missing argument 'TARGETS...'"),
    ("verify-name-typo", ["datasets", "verify", f"{ENV}/exprt-4ep"], 1,
     "Did you mean 'expert-4ep'"),
    ("verify-datasets-is-file", ["datasets", "verify", f"{ENV}/expert-4ep", "--datasets",
                                 "{file}"], 1, "holds no datasets"),
    ("import-format-missing", ["datasets", "import", "{empty}", "--env", ENV], 2,
     "Missing option '--format'"),
    ("import-format-typo", ["datasets", "import", "{empty}", "--format", "pymarl-np", "--env",
                            ENV], 1, "Did you mean 'pymarl-npy'"),
    ("import-path-missing", ["datasets", "import", "{tmp}/nowhere", "--format", "pymarl-npy",
                             "--env", ENV], 1, "is not a folder"),
    ("import-path-incomplete", ["datasets", "import", "{empty}", "--format", "pymarl-npy",
                                "--env", ENV], 1, "missing meta.json"),
    ("import-madt-empty", ["datasets", "import", "{empty}", "--format", "madt", "--env", ENV],
     1, "holds no episode files"),
    ("import-env-missing", ["datasets", "import", "{empty}", "--format", "pymarl-npy"], 2,
     "Missing option '--env'"),
    ("import-env-unknown", ["datasets", "import", "{empty}", "--format", "pymarl-npy", "--env",
                            "rware-tiny-2a"], 1, "unknown environment"),
    ("import-allow-pickle-value", ["datasets", "import", "{empty}", "--format", "madt",
                                   "--env", ENV, "--allow-pickle=1"], 2, "does not take a value"),
    ("import-overwrite-value", ["datasets", "import", "{empty}", "--format", "madt", "--env",
                                ENV, "--overwrite=1"], 2, "does not take a value"),
    ("import-quiet-value", ["datasets", "import", "{empty}", "--format", "madt", "--env", ENV,
                            "--quiet=1"], 2, "does not take a value"),
    ("export-format-typo", ["datasets", "export", "{expert}", "--format", "vault", "--out",
                            "{tmp}/out"], 1, "Did you mean 'ogmarl-vault'"),
    ("export-out-missing", ["datasets", "export", "{expert}", "--format", "ogmarl-vault"], 2,
     "Missing option '--out'"),
    ("export-target-typo", ["datasets", "export", f"{ENV}/exprt-4ep", "--format",
                            "ogmarl-vault", "--out", "{tmp}/out"], 1, "Did you mean 'expert-4ep'"),
    ("export-out-is-file", ["datasets", "export", "{expert}", "--format", "ogmarl-vault",
                            "--out", "{file}"], 1, "a file is in the way"),
    # --- finetune -------------------------------------------------------------------------------
    ("export-vault-name-path", ["datasets", "export", "{expert}", "--format", "ogmarl-vault",
                                "--out", "{tmp}/out", "--vault-name", "a/b"], 1,
     "--vault-name 'a/b' must be a plain folder name"),
    ("export-uid-path", ["datasets", "export", "{expert}", "--format", "ogmarl-vault", "--out",
                         "{tmp}/out", "--uid", "../x"], 1, "--uid '../x' must be a plain folder"),
    ("export-datasets-is-file", ["datasets", "export", f"{ENV}/expert-4ep", "--format",
                                 "ogmarl-vault", "--out", "{tmp}/out", "--datasets", "{file}"],
     1, "holds no datasets"),
    ("export-overwrite-value", ["datasets", "export", "{expert}", "--format", "ogmarl-vault",
                                "--out", "{tmp}/out", "--overwrite=1"], 2, "does not take a"),
    ("export-quiet-value", ["datasets", "export", "{expert}", "--format", "ogmarl-vault",
                            "--out", "{tmp}/out", "--quiet=1"], 2, "does not take a value"),
    ("finetune-from-missing", ["finetune"], 2, "Missing option '--from'"),
    ("finetune-from-nowhere", ["finetune", "--from", "{tmp}/nowhere"], 1,
     "does not exist or is not a folder"),
    ("finetune-from-file", ["finetune", "--from", "{file}"], 1, "is not a folder"),
    ("finetune-from-incomplete", ["finetune", "--from", "{empty}"], 1,
     "is not a complete run"),
    ("finetune-from-not-mads4", ["finetune", "--from", "{bc_run}"], 1, "bc"),
    ("finetune-env-mismatch", ["finetune", "--from", "{mads4_run}", "--env", "rware-tiny-4ag"],
     1, "rware-tiny-4ag"),
    ("finetune-set-fixed", ["finetune", "--from", "{mads4_run}", "--set", "source=x"], 1,
     "set by --from"),
    ("finetune-set-nan", ["finetune", "--from", "{mads4_run}", "--set", "actor_lr=nan", "-q"], 1,
     "must be finite"),
    ("finetune-steps-zero", ["finetune", "--from", "{mads4_run}", "--steps", "0", "-q"], 1,
     "--steps must be a positive integer"),
    ("finetune-eval-episodes-zero", ["finetune", "--from", "{mads4_run}", "--eval-episodes",
                                     "0", "-q"], 1, "--eval-episodes must be a positive"),
    ("finetune-eval-parallel-zero", ["finetune", "--from", "{mads4_run}", "--eval-parallel",
                                     "0", "-q"], 1, "--eval-parallel must be a positive"),
    ("finetune-threads-zero", ["finetune", "--from", "{mads4_run}", "--threads", "0", "-q"], 1,
     "--threads must be a positive integer"),
    ("finetune-seed-negative", ["finetune", "--from", "{mads4_run}", "--seed", "-1", "-q"], 1,
     "--seed must be an integer from 0 to 4294967295"),
    ("finetune-device-unknown", ["finetune", "--from", "{mads4_run}", "--device", "tpu9", "-q"],
     1, "invalid --device 'tpu9'"),
    ("finetune-results-is-file", ["finetune", "--from", "{mads4_run}", "--results", "{file}",
                                  "-q"], 1, "cannot write the results folder"),
    # --- options --------------------------------------------------------------------------------
    ("finetune-log-unknown", ["finetune", "--from", "{mads4_run}", "--log", "nope", "-q"], 1,
     "unknown logger 'nope'"),
    ("finetune-results-exist", ["finetune", "--from", "{mads4_run}", "-q"], 1,
     "results already exist at"),
    ("finetune-scratch-value", ["finetune", "--from", "{mads4_run}", "--from-scratch=1"], 2,
     "does not take a value"),
    ("finetune-greedy-value", ["finetune", "--from", "{mads4_run}", "--greedy=1"], 2,
     "does not take a value"),
    ("finetune-overwrite-value", ["finetune", "--from", "{mads4_run}", "--overwrite=1"], 2,
     "does not take a value"),
    # --- evaluate -------------------------------------------------------------------------------
    ("evaluate-missing-arg", ["evaluate"], 2, "Missing argument 'RUNS...'"),
    ("evaluate-nowhere", ["evaluate", "{tmp}/nowhere"], 1, "neither a completed run"),
    ("evaluate-empty", ["evaluate", "{empty}"], 1, "nor a folder of seed-* runs"),
    ("evaluate-not-return-conditioned", ["evaluate", "{bc_run}", "--target-return", "1", "-q"],
     1, "bc"),
    ("evaluate-target-not-number", ["evaluate", "{mads4_run}", "--target-return", "1,x"], 2,
     "comma-separated finite numbers"),
    ("evaluate-target-nan", ["evaluate", "{mads4_run}", "--target-return", "nan"], 2,
     "comma-separated finite numbers"),
    ("evaluate-episodes-zero", ["evaluate", "{mads4_run}", "--eval-episodes", "0"], 1,
     "--eval-episodes must be a positive integer"),
    ("evaluate-parallel-zero", ["evaluate", "{mads4_run}", "--eval-parallel", "0"], 1,
     "--eval-parallel must be a positive integer"),
    ("evaluate-threads-zero", ["evaluate", "{mads4_run}", "--threads", "0"], 1,
     "--threads must be a positive integer"),
    ("evaluate-seed-negative", ["evaluate", "{mads4_run}", "--seed", "-1"], 1,
     "--seed must be an integer from 0 to 4294967295"),
    ("evaluate-device-unknown", ["evaluate", "{mads4_run}", "--device", "tpu9", "-q"], 1,
     "invalid --device 'tpu9'"),
    ("evaluate-json-is-folder", ["evaluate", "{mads4_run}", "--json", "{empty}"], 1,
     "is a folder, not a file"),
    ("evaluate-greedy-value", ["evaluate", "{mads4_run}", "--greedy=1"], 2,
     "does not take a value"),
    ("options-missing-arg", ["options"], 2, "Missing argument 'ALGO'"),
    ("options-unknown", ["options", "bcc"], 1, "Did you mean 'bc'"),
    # --- plugins ------------------------------------------------------------------------------
    ("plugins-all-value", ["plugins", "--all=1"], 2, "does not take a value"),
]

# Cases that need a folder this user cannot write to (skipped as root: root writes anywhere).
PERMISSION_CASES = [
    ("run-results-read-only", [*RUN, "--results", "{ro}/results"], 1,
     "no write permission on"),
    ("run-datasets-read-only", [*RUN, "--dataset", "poor", "--datasets", "{ro}"], 1,
     "no write permission on"),
    ("sweep-results-read-only", [*SWEEP, "--results", "{ro}"], 1, "no write permission on"),
    ("collect-datasets-read-only", [*COLLECT, "--datasets", "{ro}"], 1,
     "no write permission on"),
    ("compare-out-read-only", [*CMP, "--out", "{ro}/report"], 1, "no write permission on"),
]


def _write_run(root: Path, algo: str, seed: int, ret: float) -> None:
    cell = root / ENV / "expert" / algo / f"seed-{seed}"
    cell.mkdir(parents=True)
    (cell / "eval.json").write_text(json.dumps({"episodes": [{"return": ret, "length": 500}]}))
    (cell / "run.json").write_text(json.dumps({
        "algo": algo, "env": ENV, "dataset": "expert", "seed": seed,
        "eval": {"return_mean": ret, "episodes": 1}, "train": {"steps": 10},
        "dataset_card": {"sha256": "a" * 64, "reference_returns": {}}}))


def _fake_run(root: Path, algo: str, **config) -> str:
    """A complete results folder of `algo` whose checkpoint is an untrained network."""
    import torch

    from marlbench import checkpoint
    from marlbench.config import build_config, to_dict
    from marlbench.plugins import registry

    reg = registry()
    spec, env = reg.algorithm(algo), reg.environment(ENV)
    cfg = build_config(spec.config_cls, spec.preset, config)
    cell = root / ENV / "expert-4ep" / algo / "seed-0"
    cell.mkdir(parents=True)
    checkpoint.save(cell / "model.safetensors", algo,
                    spec.cls(cfg, env.info, torch.device("cpu"), 0))
    (cell / "config.json").write_text(json.dumps(to_dict(cfg)))
    (cell / "eval.json").write_text(json.dumps({"episodes": [{"return": 0.0, "length": 1}]}))
    (cell / "run.json").write_text(json.dumps({
        "status": "complete", "algo": algo, "env": ENV, "dataset": "expert-4ep", "seed": 0,
        "eval": {"return_mean": 0.0, "episodes": 1}, "train": {"steps": 1}}))
    return str(cell)


@pytest.fixture
def world(tmp_path, tiny_expert, datasets_root):
    """Paths the cases refer to, and the roots whose contents must not change."""
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.h5").mkdir()  # a folder with a dataset's name
    done = tmp_path / "done"  # a results root holding a complete cell of RUN
    cell = done / ENV / "expert-4ep" / "bc" / "seed-0"
    cell.mkdir(parents=True)
    (cell / "run.json").write_text("{}")
    cmp = tmp_path / "cmp"  # a results root for compare: two algorithms, three seeds
    for seed in (0, 1, 2):
        _write_run(cmp, "bc", seed, 2.0 + seed)
        _write_run(cmp, "madt", seed, 1.0 + seed)
    runs = tmp_path / "runs"  # complete (untrained) offline runs for finetune --from
    world_runs = {"bc_run": _fake_run(runs, "bc"),
                  "mads4_run": _fake_run(runs, "mads4", d_model=8, d_state=8, n_layers=1,
                                         embed_dim=8, message_dim=8)}
    (runs / ENV / "expert-4ep" / "mads4+ft" / "seed-0").mkdir(parents=True)  # a finished one
    (runs / ENV / "expert-4ep" / "mads4+ft" / "seed-0" / "run.json").write_text("{}")
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    yield {"tmp": str(tmp_path), "file": str(tmp_path / "a-file"),
           "junk": str(tmp_path / "junk.h5"), "done": str(done), "cmp": str(cmp),
           "ro": str(ro), "empty": str(tmp_path / "empty"), "expert": str(tiny_expert),
           **world_runs}
    ro.chmod(0o755)


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root in roots:
        for p in Path(root).rglob("*"):
            st = p.lstat()
            out[str(p)] = (st.st_size if p.is_file() else -1, st.st_mtime_ns)
    return out


def _check_refused(world, datasets_root, argv, code, words):
    argv = [a.format(**world) for a in argv]
    roots = (Path(world["tmp"]), datasets_root)
    before = _snapshot(*roots)
    res = CliRunner().invoke(main, argv)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception  # a traceback: show it
    # A plugin that failed to load is warned about once per command; that line is not this
    # command's error and is not counted.
    lines = [ln for ln in res.stderr.splitlines() if not ln.startswith("warning: plugin")]
    assert res.exit_code == code, (argv, res.exit_code, res.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, res.stderr)
    assert words in lines[0], (argv, lines[0])
    assert "Traceback" not in res.output and res.stdout == "", (argv, res.stdout)
    assert _snapshot(*roots) == before, f"{argv} wrote, changed or removed files"


@pytest.mark.parametrize("argv, code, words", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(world, datasets_root, argv, code, words):
    _check_refused(world, datasets_root, argv, code, words)


@pytest.mark.skipif(IS_ROOT, reason="root writes anywhere: see the test below")
@pytest.mark.parametrize("argv, code, words", [c[1:] for c in PERMISSION_CASES],
                         ids=[c[0] for c in PERMISSION_CASES])
def test_unwritable_folders_are_one_line_and_write_nothing(world, datasets_root, argv, code,
                                                           words):
    _check_refused(world, datasets_root, argv, code, words)


_DRIVER = """
import json, sys
from click.testing import CliRunner
from marlbench.cli import main
out = []
for argv in json.loads(sys.argv[1]):
    res = CliRunner().invoke(main, argv)
    crashed = res.exception is not None and not isinstance(res.exception, SystemExit)
    out.append([res.exit_code, res.stderr, res.stdout, crashed])
print(json.dumps(out))
"""


@pytest.mark.skipif(not IS_ROOT or not shutil.which("setpriv"),
                    reason="as root: the same cases as user nobody")
def test_unwritable_folders_as_an_unprivileged_user(tiny_expert):
    """Root may write anywhere, so the permission cases run as `nobody` in one subprocess, in a
    world-readable folder of their own."""
    top = Path(tempfile.mkdtemp(prefix="marlbench-ro-"))
    try:
        top.chmod(0o777)
        world = {"tmp": str(top), "ro": str(top / "ro"), "cmp": str(top / "cmp")}
        for seed in (0, 1):
            _write_run(top / "cmp", "bc", seed, 1.0 + seed)
        data = top / "datasets" / ENV
        data.mkdir(parents=True)
        shutil.copy(tiny_expert, data / "expert-4ep.h5")
        (top / "ro").mkdir()
        for p in (top, *top.rglob("*")):
            p.chmod(0o777 if p.is_dir() else 0o666)
        (top / "ro").chmod(0o555)
        before = _snapshot(top)
        cases = [[a.format(**world) for a in c[1]] for c in PERMISSION_CASES]
        env = {**os.environ, "MARLBENCH_DATASETS": str(top / "datasets"),
               "MARLBENCH_RESULTS": str(top / "results"), "HOME": str(top)}
        proc = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
             "-c", _DRIVER, json.dumps(cases)], env=env, cwd=top, capture_output=True,
            text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results = json.loads(proc.stdout.splitlines()[-1])
        for (name, _, code, words), (exit_code, stderr, stdout, crashed) in zip(
                PERMISSION_CASES, results):
            lines = [ln for ln in stderr.splitlines() if not ln.startswith("warning: plugin")]
            assert not crashed and exit_code == code, (name, exit_code, stderr)
            assert len(lines) == 1 and lines[0].startswith("error: "), (name, stderr)
            assert words in lines[0] and stdout == "", (name, lines[0], stdout)
        assert _snapshot(top) == before
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_suggestions_are_not_repeated(world, datasets_root):
    """A name that is both a recipe and a file (expert, expert.h5) is suggested once."""
    (datasets_root / ENV / "expert.h5").touch()
    try:
        res = CliRunner().invoke(main, [*RUN, "--dataset", "exprt"])
    finally:
        (datasets_root / ENV / "expert.h5").unlink()
    assert res.exit_code == 1 and "Did you mean 'expert'" in res.stderr
    assert "'expert' or 'expert'" not in res.stderr


def test_dry_run_collects_nothing(world, datasets_root):
    res = CliRunner().invoke(main, [*SWEEP, "--datasets", "poor-3ep-seed9", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "to run" in res.stdout
    assert not (datasets_root / ENV / "poor-3ep-seed9.h5").exists()


# Options with no case above, and why.
NOT_IN_MATRIX = {
    ("datasets", "import", "--name"): "checked after the source is read: needs a real dump",
    ("datasets", "import", "--quality"): "a free-form label",
    ("datasets", "import", "--datasets"): "checked after the source is read: needs a real dump",
}


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


def test_the_matrix_covers_every_option_of_every_command():
    """A new command or option fails this test until the matrix has a case for it."""
    missing = []
    for path, cmd in _commands(main):
        argvs = [c[1] for c in CASES + PERMISSION_CASES if tuple(c[1][:len(path)]) == path]
        flags = {a.split("=")[0] for argv in argvs for a in argv}
        for p in cmd.params:
            if isinstance(p, click.Option) and "--help" not in p.opts and \
                    not flags & set(p.opts) and (*path, p.opts[0]) not in NOT_IN_MATRIX:
                missing.append(" ".join((*path, p.opts[0])))
        if not argvs:
            missing.append(" ".join(path))
    assert not missing, f"no bad-input case for: {', '.join(missing)}"
