"""The malformed-input and fault corpus, command by command: RESULTS.md "Faults and bad input" (issue 16).

    .venv/bin/python benchmarks/faults.py             # run the corpus (a few minutes on 2 cores), print the table
    .venv/bin/python benchmarks/faults.py --results   # and write it into benchmarks/RESULTS.md

The corpus is the tests named in ``CORPUS`` below, each a bad input or a fault a hostile user tried (issue
16's list, the reader corpus of ``tests/malformed_corpus.py``): it is part of ``make test``; this script runs
just those tests, counts the cases (pytest's parametrised items) that pass per command and kind of outcome,
and prints the command that replays each row. A case passes when its command did what the row says: a clear
error (exit 2 or ``InputError``, the file and the fix named, no traceback), a counted drop (the frame or clip
left out with its reason, the run going on), a refusal before anything is written, or a killed run that
resumed to a byte-identical result.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_description, write_section  # noqa: E402

# (command, kind of outcome, what is tried, pytest node ids: file::function, every parametrised case counts)
CORPUS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("readers", "clear error", "malformed .dat / .npy / .npz / events / meta.json files (tests/malformed_corpus.py)",
     ("tests/test_formats.py::test_malformed_input_is_a_clear_input_error",)),
    ("ingest", "counted drop", "missing or unreadable PNGs, size mismatches, bad, unsorted, sub-ns, overflowing "
     "windows, windows past the stream, absurd PNG headers", ("tests/test_ingest.py::test_malformed_frames_are_dropped_with_reason",
                                                              "tests/test_ingest.py::test_a_frame_dropped_for_its_images_is_never_voxelized")),
    ("ingest", "clear error", "missing exposure.csv / meta.json / stream, bad exposure.csv (incl. a BOM), sizes "
     "no worker can hold, rate_hz 1e300, impossible preset spans, a sequence that keeps no frame",
     ("tests/test_ingest.py::test_structural_errors_name_the_file",
      "tests/test_ingest.py::test_sizes_and_numbers_no_machine_can_hold_stop_before_anything_is_written",
      "tests/test_ingest.py::test_a_sequence_that_keeps_no_frame_is_an_error_naming_it",
      "tests/test_windows.py::test_malformed_exposure_csv", "tests/test_windows.py::test_missing_exposure_csv",
      "tests/test_windows.py::test_exposure_csv_with_a_byte_order_mark_reads_like_without")),
    ("ingest", "refused, nothing lost", "--out inside, equal to or holding RAW; foreign files in the store; a "
     "second ingest into the same store at once; symlinks out of RAW named",
     ("tests/test_ingest.py::test_ingest_refuses_an_output_that_overlaps_the_raw_tree",
      "tests/test_ingest.py::test_ingest_never_replaces_what_it_did_not_write",
      "tests/test_ingest.py::test_a_second_ingest_into_a_store_being_written_stops_with_a_clear_error",
      "tests/test_ingest.py::test_a_spike_file_linked_from_outside_raw_is_named")),
    ("ingest", "killed, resumed identical", "SIGKILL during a sequence build (three kill delays); temp files of "
     "a killed writer", ("tests/test_ingest.py::test_interrupted_ingest_resumes_byte_identical",
                         "tests/test_ingest.py::test_rerun_removes_temp_files_a_killed_run_left")),
    ("store readers", "clear error", "manifest and dataset.json paths leaving DATA_ROOT; a manifest that is not "
     "Parquet or has a foreign version", ("tests/test_store_paths.py::test_a_manifest_path_outside_the_store_is_refused_by_every_reader",
                                          "tests/test_store_paths.py::test_a_dataset_json_sequence_outside_the_store_is_refused",
                                          "tests/test_store_paths.py::test_a_damaged_manifest_is_a_clear_error")),
    ("verify / Dataset", "found, counted drop", "a flipped bit in a voxel chunk, a deleted frame shard, a tampered "
     "manifest checksum, a sequence missing from dataset.json, an older store version",
     ("tests/test_verify.py::test_a_flipped_bit_in_a_voxel_chunk_is_caught_by_every_reader",
      "tests/test_verify.py::test_a_deleted_frame_shard_is_a_missing_sample_not_zeros",
      "tests/test_verify.py::test_a_tampered_manifest_checksum_and_an_unknown_sequence_are_reported",
      "tests/test_verify.py::test_an_older_store_says_reingest_and_an_ingest_rerun_rebuilds_it")),
    ("audit", "clear error or skipped overlay", "a deleted ingest.json, a damaged shard under --overlays, an "
     "overlay that cannot be encoded", ("tests/test_verify.py::test_audit_names_a_deleted_ingest_json",
                                        "tests/test_verify.py::test_audit_overlays_skip_a_damaged_shard_and_draw_the_rest",
                                        "tests/test_audit.py::test_failed_overlay_encode_is_an_error_not_an_empty_png")),
    ("train", "counted drop or clear error", "damaged training shards (some: dropped and counted; all: stops, "
     "dry-run too), CROP_SIZE 60, pickled --vrt-weights, missing VGG weights, a NaN loss, the other arm's "
     "checkpoint", ("tests/test_train.py::test_damaged_training_frames_are_dropped_and_counted",
                    "tests/test_train.py::test_a_store_whose_training_samples_are_all_damaged_stops_with_an_error",
                    "tests/test_train.py::test_bad_crop_size_and_weights_are_clear_errors",
                    "tests/test_train.py::test_missing_vgg_weights_is_a_clear_error",
                    "tests/test_train.py::test_nan_loss_stops_with_the_checks_and_saves_nothing",
                    "tests/test_train.py::test_resume_refuses_the_other_arm")),
    ("config", "clear error", "unknown keys, invalid values, LAYERS / HEADS / CHANNELS_PER_SCALE that do not fit, "
     "missing VRT_CFG", ("tests/test_schemas.py::test_unknown_key_is_named", "tests/test_schemas.py::test_invalid_values_are_named",
                         "tests/test_schemas.py::test_inconsistent_model_sections_are_named",
                         "tests/test_schemas.py::test_config_file_errors")),
    ("test", "clear error", "a damaged or foreign checkpoint, voxels that do not fit, a damaged store shard, the "
     "wrong arm or config", ("tests/test_test_cmd.py::test_damaged_checkpoint_is_a_clear_error",
                             "tests/test_test_cmd.py::test_mismatched_voxels_are_clear_errors",
                             "tests/test_test_cmd.py::test_a_damaged_store_shard_is_a_clear_error",
                             "tests/test_test_cmd.py::test_wrong_arm_or_config_is_refused")),
    ("compare", "clear error", "missing runs, reports of another version, wrong roles",
     ("tests/test_compare.py::test_errors", "tests/test_compare.py::test_load_run_checks_names")),
    ("view", "clear error", "sources it cannot read, bad options, a non-empty --out",
     ("tests/test_view.py::test_bad_input_is_a_clean_error",)),
    # ---- issue 28, store / input / config side: a store others use, full and read-only disks, images, configs ----
    ("store: readers, writers", "refused, nothing lost", "ingest --force or audit while a training reads the store; "
     "train, test --store, baselines, verify while ingest writes it (each names the other process); audit holds "
     "the write lock", ("tests/test_store_faults.py::test_writers_refuse_while_a_training_reads_naming_it",
                        "tests/test_store_faults.py::test_readers_refuse_while_a_writer_runs_naming_it",
                        "tests/test_store_faults.py::test_audit_holds_the_write_lock")),
    ("store: read-only", "clear error, or works", "audit and a no-op ingest rerun (EROFS simulated; a read-only bind "
     "mount where allowed); on the mount verify, stats, baselines --out, train --dry-run, test --store work",
     ("tests/test_store_faults.py::test_read_only_store_simulated",
      "tests/test_store_faults.py::test_read_only_store_on_a_read_only_mount")),
    ("ingest: full disk", "clear error, nothing half-built", "ENOSPC (simulated fsync; a 700 KiB tmpfs where "
     "allowed): 'no space left' and the file named, the half-built sequence removed, no dataset.json",
     ("tests/test_store_faults.py::test_disk_full_during_ingest_simulated",
      "tests/test_store_faults.py::test_disk_full_during_ingest_on_a_small_tmpfs")),
    ("ingest", "counted drop", "an exposure window to t1 = 1e300 / from t0 = -1e300 s in event lists (was an "
     "OverflowError) and .dat", ("tests/test_ingest.py::test_window_past_the_data_is_dropped_in_every_format",)),
    ("ingest", "nothing outside the named folders", "run from another folder: the align log goes to DATA_ROOT/logs",
     ("tests/test_store_faults.py::test_align_log_goes_into_the_store_not_the_current_folder",)),
    ("images", "EXIF ignored", "JPEG and PNG frames carrying EXIF orientation 3 (read as stored); every image read "
     "in spikeprep, model, cli, benchmarks", ("tests/test_images.py::test_exif_orientation_is_ignored",
                                              "tests/test_images.py::test_every_image_read_ignores_exif")),
    ("config", "clear error", "a key given twice (config, VRT config file), Latin-1 bytes: in train, stats / ingest "
     "--write-config, ingest / audit --config", ("tests/test_schemas.py::test_duplicate_yaml_key_is_refused_naming_both_lines",
                                                 "tests/test_schemas.py::test_vrt_config_file_uses_the_same_loader",
                                                 "tests/test_schemas.py::test_non_utf8_config_names_the_file_and_byte",
                                                 "tests/test_schemas.py::test_non_utf8_and_duplicate_configs_exit_2_in_every_command")),
    ("store readers", "clear error", "an ingest.json row whose seq leaves DATA_ROOT, a bad dataset.json field: one "
     "sentence naming the file, row and field", ("tests/test_schemas.py::test_record_errors_name_the_file_row_and_field",
                                                 "tests/test_schemas.py::test_many_bad_rows_are_one_line")),
    # ---- end of issue 28, store / input / config side -----------------------------------------------------
]

# Issue 28 (second hostile round), training and test side: reruns and concurrent runs of `train`, signals,
# diverged weights, full disks, outputs inside a store.
TRAINING_AND_TEST_FAULTS_28: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("train", "refused, nothing lost", "a rerun of an experiment with outputs without --resume (--start-over moves "
     "it aside; a killed save's temp file removed); a second training of the same --exp at once; LOG.SAVE_DIR "
     "inside the store", ("tests/test_train.py::test_a_rerun_of_an_experiment_is_refused_and_start_over_moves_the_old_run_aside",
                          "tests/test_train.py::test_a_second_training_of_the_same_experiment_stops_at_once_naming_the_first",
                          "tests/test_train.py::test_outputs_inside_the_store_are_refused")),
    ("train", "signal: saved, resume command", "SIGTERM mid-run (last.pth at that step, exit 143) and before the "
     "loop (said, exit 143); SIGUSR1 (saves, trains on); both to the process group, DataLoader worker included",
     ("tests/test_train.py::test_sigterm_saves_last_pth_and_says_how_to_resume_and_sigusr1_saves_and_trains_on",
      "tests/test_train.py::test_sigterm_before_the_training_loop_is_said_and_exits_143")),
    ("train", "clear error", "weights that turn NaN while the loss is finite (never saved), a NaN loss after a "
     "save (the good checkpoint named); every training shard damaged under the fitted head (dry run and run); a "
     "full disk at a checkpoint save (simulated ENOSPC; a 1 MiB tmpfs where it can be mounted, else skipped); "
     "last.pth a folder", ("tests/test_train.py::test_weights_that_turn_non_finite_are_never_saved_and_the_message_names_the_good_checkpoint",
                           "tests/test_train.py::test_a_store_whose_training_frames_are_all_damaged_stops_before_the_fitted_heads_start",
                           "tests/test_train.py::test_a_checkpoint_save_on_a_full_disk_says_so_and_leaves_nothing_partial",
                           "tests/test_train.py::test_training_onto_a_full_tmpfs_stops_with_no_space_left_naming_the_checkpoint")),
    ("test", "clear error or refused", "a checkpoint of NaN weights; an output frame that is not finite (the frame "
     "named); --output / --metrics-dir inside the store",
     ("tests/test_test_cmd.py::test_a_checkpoint_of_non_finite_weights_is_refused_when_it_loads",
      "tests/test_test_cmd.py::test_non_finite_outputs_are_an_error_naming_the_frame",
      "tests/test_test_cmd.py::test_an_output_inside_the_store_is_refused")),
    ("view / baselines / audit / verify / compare", "refused, nothing written", "an output inside the store (other "
     "than baselines/ and audit/, their own parts)",
     ("tests/test_outputs_outside_store.py::test_a_command_whose_output_lies_inside_a_store_is_refused_before_it_writes",
      "tests/test_outputs_outside_store.py::test_own_parts_of_the_store_and_paths_outside_are_allowed")),
]
CORPUS += TRAINING_AND_TEST_FAULTS_28


def run(node_ids: list[str], junit: Path) -> dict[str, tuple[int, int]]:
    """Run the tests; ``{node id: (cases, passed)}`` from pytest's JUnit XML."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *node_ids]
    subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    counts = {n: [0, 0] for n in node_ids}
    for case in ET.parse(junit).getroot().iter("testcase"):
        file = case.get("classname", "").replace(".", "/") + ".py"
        node = f"{file}::{case.get('name', '').split('[')[0]}"
        if node in counts:
            counts[node][0] += 1
            counts[node][1] += not any(child.tag in ("failure", "error", "skipped") for child in case)
    return {n: (c, p) for n, (c, p) in counts.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    t0 = time.time()
    nodes = [n for *_, ids in CORPUS for n in ids]
    with tempfile.TemporaryDirectory() as tmp:
        counts = run(nodes, Path(tmp) / "junit.xml")
    lines = ["| command | outcome | what is tried | cases | as expected | replay |", "|---|---|---|---|---|---|"]
    total = good = 0
    for command, kind, what, ids in CORPUS:
        cases = sum(counts[n][0] for n in ids)
        passed = sum(counts[n][1] for n in ids)
        total, good = total + cases, good + passed
        replay = "`.venv/bin/python -m pytest " + " ".join(ids) + "`"
        lines.append(f"| {command} | {kind} | {what} | {cases} | {passed} | {replay} |")
    lines.append(f"| all | | | {total} | {good} | `.venv/bin/python benchmarks/faults.py` |")
    table = "\n".join(lines) + "\n"
    minutes = (time.time() - t0) / 60
    print(table + f"{good} of {total} cases as expected ({minutes:.1f} min)")
    if args.results:
        body = "\n".join(["## Faults and bad input (issue 16)", "",
                          f"Command: `.venv/bin/python benchmarks/faults.py --results` ({cpu_description()}, "
                          f"{time.strftime('%Y-%m-%d')}, {minutes:.1f} min). Each case is a test of `make test`; a "
                          "case is as expected when the command gave a clear error (file and fix named, no "
                          "traceback), a counted drop, a refusal before anything was written, or a resumed run "
                          "byte-identical to an uninterrupted one, as its row says.", "", table])
        write_section(REPO / "benchmarks" / "RESULTS.md", "## Faults and bad input (issue 16)", body)
    return 0 if good == total else 1


if __name__ == "__main__":
    sys.exit(main())
