"""`python -m varlite generate --model dNN`: the official depth's size, memory and time are printed before loading,
and a depth the machine's free memory cannot hold is refused with one line (exit 2) instead of being killed."""
from varlite import cli, family, pretrained


def placeholder_official_files(folder, depth: int) -> None:
    """Empty files where the official vae and VAR-d<depth> files go: the check runs before anything is read."""
    for name in ("vae", f"d{depth}"):
        pretrained.official_path(name, folder).write_bytes(b"")


def test_generate_refuses_a_depth_that_does_not_fit(tmp_path, monkeypatch, capsys):
    placeholder_official_files(tmp_path, 20)
    monkeypatch.setattr(family, "available_memory_bytes", lambda: 3 * 2**30)
    code = cli.main(["generate", "--model", "d20", "--cache-dir", str(tmp_path), "--class", "1", "2", "--n", "2",
                     "--device", "cpu", "--out", str(tmp_path / "out.png")])
    err = capsys.readouterr().err.strip().splitlines()
    need = family.official_footprint(20, batch=4)
    assert code == 2
    assert err[0] == need.summary() and "VAR-d20: 601 M parameters" in err[0] and "4 images at once" in err[0]
    assert err[1].startswith(f"error: VAR-d20 needs ~{need.memory_bytes / 2**30:.1f} GB")
    assert "only 3.0 GB free" in err[1] and "generate fewer images at once" in err[1]
    assert len(err) == 2 and not (tmp_path / "out.png").exists()


def test_generate_goes_on_to_load_a_depth_that_fits(tmp_path, monkeypatch, capsys):
    """With the memory there, the loader runs next: here it finds the placeholder empty and says so."""
    placeholder_official_files(tmp_path, 16)
    monkeypatch.setattr(family, "available_memory_bytes", lambda: 64 * 2**30)
    code = cli.main(["generate", "--model", "d16", "--cache-dir", str(tmp_path), "--class", "1", "--n", "1",
                     "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(family.official_footprint(16).summary())
    assert "GB free" not in err and "var_d16.pth is empty" in err


def test_missing_files_are_left_to_the_loader(tmp_path, capsys):
    assert cli.main(["generate", "--model", "d24", "--cache-dir", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "parameters" not in err and "download" in err
