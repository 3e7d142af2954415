"""research.zoology_test_set: the fixture's Zoology sequences as a test split our MQAR loader reads."""

from __future__ import annotations

import numpy as np
import pytest

from research.zoology_test_set import FIXTURE, write_test_set


def test_the_setting_is_written_as_a_test_split(tmp_path):
    path = write_test_set("v8192_t64_kv4", tmp_path)
    with np.load(path) as written, np.load(FIXTURE) as fixture:
        assert written["inputs"].dtype == written["labels"].dtype == np.int64
        np.testing.assert_array_equal(written["inputs"], fixture["v8192_t64_kv4/inputs"])
        np.testing.assert_array_equal(written["labels"], fixture["v8192_t64_kv4/labels"])
        assert (written["labels"] != -100).sum(1).tolist() == [4] * len(written["labels"])


def test_an_unknown_setting_names_the_ones_there_are(tmp_path):
    with pytest.raises(ValueError, match="v8192_t64_kv4"):
        write_test_set("nope", tmp_path)
