"""research.build_binaries: the package-list file of the larger binaries split."""

from __future__ import annotations

from pathlib import Path

import pytest

from research.build_binaries import read_package_names

REPO = Path(__file__).resolve().parents[1]


def test_package_names_skip_comments_and_blank_lines(tmp_path):
    listing = tmp_path / "packages.txt"
    listing.write_text("# a comment\nlibfoo1  bar-utils # trailing comment\n\nlibc++abi1-14\n")
    assert read_package_names(listing) == ["libfoo1", "bar-utils", "libc++abi1-14"]


@pytest.mark.parametrize("bad", ["Upper", "../etc/passwd", "x;rm"])
def test_a_word_that_is_no_package_name_is_refused_with_the_file(tmp_path, bad):
    listing = tmp_path / "packages.txt"
    listing.write_text(f"libfoo1\n{bad}\n")
    with pytest.raises(SystemExit, match=rf"--packages-file {listing}: not Debian package names: .*"):
        read_package_names(listing)


def test_the_committed_list_has_400_distinct_names():
    names = read_package_names(REPO / "research" / "binaries_packages.txt")
    assert len(names) == len(set(names)) == 400
