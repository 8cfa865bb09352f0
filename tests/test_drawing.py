"""Annotated-image drawing: outlined text keeps one layout with its outline."""

import cv2
import numpy as np
import pytest

from lmpcli.outputs import draw_keypoints, put_text


def _changed_columns(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.nonzero((before != after).any(axis=(0, 2)))[0]


@pytest.mark.parametrize("text", ["Black footed Albatross", "5", "filter 1280"])
def test_outline_ends_with_the_text(text):
    # cv2.putText advances glyphs further at larger thickness; an outline drawn as thicker text
    # runs past the last letter. The outline must end within outline_px of the text itself.
    scale, org, outline_px = 0.6, (10, 40), 2
    img = np.full((60, 400, 3), 128, np.uint8)
    put_text(img, text, org, scale, (255, 255, 255), (0, 0, 0), 1, outline_px)
    text_only = np.full_like(img, 128)
    cv2.putText(text_only, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    base = np.full_like(img, 128)
    cols, text_cols = _changed_columns(base, img), _changed_columns(base, text_only)
    assert cols.min() >= text_cols.min() - outline_px - 1
    assert cols.max() <= text_cols.max() + outline_px + 1
    # the outline is drawn: dark pixels exist, and the text stays white on top of it
    assert (img < 40).all(axis=2).sum() > 20
    assert (img[text_only.max(axis=2) == 255] >= 250).all()


def test_put_text_clips_at_the_border_and_handles_grey():
    img = np.zeros((20, 30), np.uint8)
    put_text(img, "wide text far past the edge", (5, 15), 0.5, 255, 0)
    assert img.max() == 255 and img.shape == (20, 30)
    before = img.copy()
    put_text(img, "off", (100, 100), 0.5, 255, 0)  # entirely outside the image
    assert np.array_equal(img, before)


def test_draw_keypoints_marks_each_point_and_skips_nan():
    img = np.full((200, 300, 3), 128, np.uint8)
    xy = np.array([[50.0, 60.0], [np.nan, np.nan], [250.0, 150.0]])
    out = draw_keypoints(img, xy, None, "label")
    assert out.shape == img.shape and (img == 128).all()  # input untouched
    assert tuple(out[60, 50]) == (0, 0, 255)  # rank 1: red (BGR) disc centred on its keypoint
    assert tuple(out[150, 250]) == (0, 220, 0)  # rank 3 keeps its own colour although rank 2 is NaN
