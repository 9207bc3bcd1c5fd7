"""Pre-flight: every bad table row and image is reported with its file, line and column."""
import pandas as pd
import pytest
import yaml

from kit.competition import CompetitionError, load_competition
from kit.preflight import PreflightError, preflight


def _train(comp_dir):
    return pd.read_csv(comp_dir / "train.csv", dtype=str)


def test_clean_demo_passes(demo_copy):
    df = preflight(load_competition(demo_copy))
    assert len(df) == len(_train(demo_copy))


def test_missing_image_is_named(demo_copy):
    victim = _train(demo_copy).id[7]
    (demo_copy / "train" / f"{victim}.png").unlink()
    with pytest.raises(PreflightError) as e:
        preflight(load_competition(demo_copy))
    msg = str(e.value)
    assert "1 problem" in msg and f"train.csv:9 column 'id' = '{victim}'" in msg and f"{victim}.png: missing" in msg


def test_corrupt_and_truncated_images_are_named(demo_copy):
    ids = _train(demo_copy).id
    (demo_copy / "train" / f"{ids[3]}.png").write_bytes(b"this is not a png at all")
    good = (demo_copy / "train" / f"{ids[4]}.png").read_bytes()
    (demo_copy / "train" / f"{ids[4]}.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(PreflightError) as e:
        preflight(load_competition(demo_copy))
    msg = str(e.value)
    assert "2 problem" in msg
    assert f"{ids[3]}.png: not an image" in msg and f"{ids[4]}.png: corrupt or truncated" in msg


def test_bad_test_image_is_named_with_the_sample_submission_row(demo_copy):
    sample = pd.read_csv(demo_copy / "sample_submission.csv", dtype=str)
    (demo_copy / "test" / f"{sample.id[10]}.png").write_bytes(b"")
    with pytest.raises(PreflightError, match=rf"sample_submission.csv:12 .*{sample.id[10]}.png: empty file"):
        preflight(load_competition(demo_copy))


def test_missing_column_is_named(demo_copy):
    _train(demo_copy).rename(columns={"label": "digit"}).to_csv(demo_copy / "train.csv", index=False)
    with pytest.raises(CompetitionError, match=r"train.csv: missing column\(s\) \['label'\]"):
        preflight(load_competition(demo_copy))


def test_unknown_class_and_duplicate_id_are_named(demo_copy):
    df = _train(demo_copy)
    df.loc[5, "label"] = "eleven"
    df.loc[20, "id"] = df.id[2]
    df.to_csv(demo_copy / "train.csv", index=False)
    with pytest.raises(PreflightError) as e:
        preflight(load_competition(demo_copy))
    msg = str(e.value)
    assert "train.csv:7 column 'label' = 'eleven': unknown class" in msg
    assert f"train.csv:22 column 'id' = '{df.id[2]}': duplicate id (first at line 4)" in msg


def test_competition_yaml_errors_name_the_key(demo_copy):
    spec = yaml.safe_load((demo_copy / "competition.yaml").read_text())
    spec["task"] = "regression"
    (demo_copy / "competition.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(CompetitionError, match="task: 'regression' is not one of"):
        load_competition(demo_copy)
    with pytest.raises(CompetitionError, match="not found"):
        load_competition(demo_copy / "nowhere")


def _plant(path, kind, good: bytes):
    if kind == "missing":
        path.unlink()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "not an image":
        path.write_bytes(b"%PDF-1.4 not a picture")
    elif kind == "folder":
        path.unlink()
        path.mkdir()
    elif kind == "symlink loop":
        path.unlink()
        path.symlink_to(path)


@pytest.mark.parametrize("seed", [0, 1])
def test_k_planted_bad_files_are_all_reported_with_paths_and_rows(demo_copy, seed):
    import random
    rng = random.Random(seed)
    ids = _train(demo_copy).id.tolist()
    k = rng.randint(3, 60)  # above 50 too: the message is cut, the listing file is not
    victims = rng.sample(range(len(ids)), k)
    kinds = ["missing", "empty", "truncated", "not an image", "folder", "symlink loop"]
    good = (demo_copy / "train" / f"{ids[0]}.png").read_bytes()
    for n, i in enumerate(victims):
        _plant(demo_copy / "train" / f"{ids[i]}.png", kinds[n % len(kinds)], good)
    with pytest.raises(PreflightError) as e:
        preflight(load_competition(demo_copy))
    msg = str(e.value)
    assert f"found {k} problem(s)" in msg
    lines = msg.splitlines()[1:51]
    if k > 50:
        listing = demo_copy / ".kit_cache" / "preflight_problems.txt"
        assert f"all {k} are listed in {listing}" in msg
        lines = listing.read_text().splitlines()
    assert len(lines) == k
    for i in victims:  # each bad file named once, with its train.csv line
        assert sum(f"train.csv:{i + 2} column 'id' = '{ids[i]}'" in line and f"{ids[i]}.png: " in line
                   for line in lines) == 1
