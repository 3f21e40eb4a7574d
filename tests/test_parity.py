"""Parity with the official implementation on the upstream reference set (minGPT's test_huggingface_import pattern)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tests.conftest import REF_DIR
from varlite.parity import ParityRun, ReferenceSetError, run_parity


@pytest.fixture(scope="module")
def full_run():
    run = ParityRun(REF_DIR)
    run.run()
    return run


def test_every_reference_array_matches(full_run):
    failed = [(c.name, c.max_abs_diff, c.note) for c in full_run.checks if not c.passed]
    assert failed == []
    assert full_run.unchecked() == [], "every array of the reference set must be checked"
    names = {c.name for c in full_run.checks}
    for key in ("tf_logits", "greedy.img", "sampled.img", "recon_last", "var_input", "idxBl.s3", "greedy.idx.s3",
                "sampled.idx_cat", "weights.vae.sha256", "weights.var.sha256", "input_u8"):
        assert key in names


def test_tokens_are_exact_and_floats_within_observed_upstream_noise(full_run):
    by_name = {c.name: c for c in full_run.checks}
    for name, check in by_name.items():
        if ".idx" in name or (name.startswith("idxBl") and "to_img" not in name):
            assert check.tolerance == 0 and check.max_abs_diff == 0, name
    # observed here: logits <= 3.4e-6, f_hat <= 1.2e-7, images <= 1.5e-5 (upstream vs itself at 1 thread: 6.5e-6)
    assert by_name["tf_logits"].max_abs_diff < 1e-5
    assert by_name["greedy.cfg_logits.s3"].max_abs_diff < 1e-5
    assert by_name["greedy.f_hat"].max_abs_diff < 1e-6
    assert max(by_name[f"idxBl_to_img.s{i}"].max_abs_diff for i in range(4)) < 5e-5


def test_regenerated_weights_match_recorded_sha256(full_run):
    assert full_run.weights_source.startswith("vae: regenerated")
    rows = [c for c in full_run.checks if c.name.startswith("weights.")]
    assert [c.passed for c in rows] == [True, True]


def test_cli_exit_code_and_table(capsys):
    assert run_parity(REF_DIR) == 0
    out = capsys.readouterr().out
    assert "greedy.idx_cat" in out and "FAIL" not in out
    assert "checks passed" in out


def copy_set(tmp_path, **replace_arrays):
    dst = tmp_path / "set"
    shutil.copytree(REF_DIR, dst)
    cases = dict(np.load(dst / "cases.npz"))
    for key, value in replace_arrays.items():
        if value is None:
            cases.pop(key)
        else:
            cases[key] = value
    (dst / "cases.npz").chmod(0o644)
    np.savez(dst / "cases.npz", **cases)
    return dst, cases


def test_a_wrong_token_fails_the_run(tmp_path, capsys, ref_cases):
    bad = ref_cases["greedy.idx.s2"].copy()
    bad[0, 0] = (bad[0, 0] + 1) % 64
    dst, _ = copy_set(tmp_path, **{"greedy.idx.s2": bad})
    assert run_parity(dst) == 1
    out = capsys.readouterr().out
    assert "greedy.idx.s2" in out and "FAIL" in out and "1 of 18 differ" in out


def test_tampered_recorded_weight_hash_fails(tmp_path):
    dst, _ = copy_set(tmp_path)
    meta = json.loads((dst / "meta.json").read_text())
    meta["weights_sha256"]["var"]["per_tensor"]["head.bias"] = "0" * 64
    (dst / "meta.json").chmod(0o644)
    (dst / "meta.json").write_text(json.dumps(meta))
    run = ParityRun(dst)
    run.run()
    bad = [c for c in run.checks if not c.passed]
    assert [c.name for c in bad] == ["weights.var.sha256"] and "head.bias" in bad[0].note


def test_weights_from_pth_files_are_used_when_present(tmp_path, ref_state_dicts):
    dst, _ = copy_set(tmp_path)
    torch.save(ref_state_dicts[0], dst / "vae.pth")
    torch.save(ref_state_dicts[1], dst / "var.pth")
    run = ParityRun(dst)
    run.run()
    assert run.weights_source == "vae.pth; var.pth"
    assert all(c.passed for c in run.checks)


def test_compact_key_forms_of_larger_sets(tmp_path, ref_cases):
    """Large sets store float16 copies, logit summaries and separate label arrays; all must be understood."""
    tf = torch.from_numpy(ref_cases["tf_logits"])
    top_v, top_i = tf.topk(5, dim=-1, sorted=True)
    greedy_cfg = torch.cat([torch.from_numpy(ref_cases[f"greedy.cfg_logits.s{i}"]) for i in range(4)], dim=1)
    g_v, g_i = greedy_cfg.topk(5, dim=-1, sorted=True)
    compact = {
        "tf_logits": None, "recon_last": None, "greedy.img": None,
        "recon_last_f16": ref_cases["recon_last"].astype(np.float16),
        "greedy.img_f16": ref_cases["greedy.img"].astype(np.float16),
        "tf_logits.top5_values": top_v.numpy(), "tf_logits.top5_indices": top_i.numpy(),
        "tf_logits.first10_f16": tf[:, :10].numpy().astype(np.float16),
        "tf_logits.logsumexp": tf.logsumexp(-1).numpy(), "tf_logits.mean": tf.mean(-1).numpy(),
        "tf_logits.std": tf.std(-1).numpy(),
        "greedy.cfg_logits.top5_values": g_v.numpy(), "greedy.cfg_logits.top5_indices": g_i.numpy(),
        "label_tf": ref_cases["labels"], "labels_gen": ref_cases["labels"],
    }
    dst, cases = copy_set(tmp_path, **compact)
    run = ParityRun(dst)
    run.run()
    assert [c.name for c in run.checks if not c.passed] == []
    assert run.unchecked() == []
    names = {c.name for c in run.checks}
    assert {"recon_last_f16", "greedy.img_f16", "tf_logits.first10_f16", "tf_logits.top5_indices",
            "greedy.cfg_logits.top5_indices"} <= names


def test_teacher_forced_labels_as_label_tf_only(tmp_path, ref_cases):
    """Compact sets name the teacher-forced labels ``label_tf`` and have no ``labels`` (it used to raise KeyError)."""
    dst, cases = copy_set(tmp_path, labels=None, label_tf=ref_cases["labels"])
    assert "labels" not in cases
    run = ParityRun(dst)
    run.run()
    assert [c.name for c in run.checks if not c.passed] == []
    assert run.unchecked() == [] and "tf_logits" in {c.name for c in run.checks}


def test_a_set_without_labels_names_the_missing_keys(tmp_path, capsys):
    dst, _ = copy_set(tmp_path, labels=None)
    with pytest.raises(ReferenceSetError, match=r"cases.npz has none of the keys 'label_tf', 'labels' for the "
                                                r"teacher-forced labels"):
        ParityRun(dst).run()


def test_generation_labels_from_labels_gen_or_the_call(tmp_path, ref_cases):
    dst, _ = copy_set(tmp_path)
    config = json.loads((dst / "config.json").read_text())
    del config["greedy_call"]["label_B"]
    (dst / "config.json").chmod(0o644)
    (dst / "config.json").write_text(json.dumps(config))
    with pytest.raises(ReferenceSetError, match="the greedy generation has no labels: cases.npz has no 'labels_gen' "
                                                "and config.json 'greedy_call' has no 'label_B'"):
        ParityRun(dst).run()


def test_a_folder_that_is_not_a_reference_set(tmp_path):
    with pytest.raises(ReferenceSetError, match="is not a reference set: it has no config.json"):
        ParityRun(tmp_path)
