"""The targets table: PSNR gaps and time ratios on the pairs both methods ran, face targets on faces only."""
import pandas as pd

from varlib.study.targets import MEAN, Target, measure, targets_table


def _cases(image_set="celeba-val"):
    rows = []
    for task, shift in (("inpaint_box", 2.0), ("sr4", 0.2)):
        for i in range(4):
            img = f"{i:06d}.jpg"
            rows += [dict(image_set=image_set, image=img, task=task, method="var", psnr=25 + i, seconds=2.0),
                     dict(image_set=image_set, image=img, task=task, method="tv", psnr=25 + i - shift, seconds=0.5),
                     dict(image_set=image_set, image=img, task=task, method="init", psnr=24 + i, seconds=0.0),
                     dict(image_set=image_set, image=img, task=task, method="var-no-dc", psnr=23 + i, seconds=0.2)]
            if i < 2:  # a slow method on the first two images only
                rows.append(dict(image_set=image_set, image=img, task=task, method="dps", psnr=20.0, seconds=50.0 + i))
    return pd.DataFrame(rows)


def test_gaps_and_ratios_are_measured_on_shared_pairs():
    df = _cases()
    box = measure(Target("t", "psnr_gap", "var", "tv", "inpaint_box", 1.5), df)
    assert box["value"] == 2.0 and box["met"] == "yes" and box["images"] == 4
    sr = measure(Target("t", "psnr_gap", "var", "tv", "sr4", 0.5), df)
    assert abs(sr["value"] - 0.2) < 1e-9 and sr["met"] == "no"
    # DPS ran on images 0 and 1: var's PSNR over those (25.5), not over all four (26.5)
    gap = measure(Target("t", "psnr_gap", "var", "dps", MEAN, 0.0), df)
    assert gap["images"] == 2 and abs(gap["value"] - 5.5) < 1e-9
    ratio = measure(Target("t", "time_ratio", "var", "dps", MEAN, 0.1), df)
    assert abs(ratio["value"] - 2.0 / 50.5) < 1e-4 and ratio["met"] == "yes"
    assert measure(Target("t", "psnr_gap", "var", "diffpir", MEAN, 0.0), df) is None  # not in the run


def test_face_targets_only_on_faces():
    faces = targets_table(_cases("celeba-val"))
    photos = targets_table(_cases("embedded"))
    assert "var above TV on box inpainting" in set(faces["target"])
    assert "var above TV on box inpainting" not in set(photos["target"])
    assert "var time per image at most 1/10 of DPS's" in set(photos["target"])
    row = faces.set_index("target").loc["var-no-dc above init on box inpainting"]
    assert row["met"] == "no" and row["value"] == -1.0
