"""What a report records about the code it measured."""
import subprocess

from tritonize.bench.report.provenance import git_commit


def test_the_commit_is_marked_dirty_when_code_outside_the_committed_reports_differs_from_it(tmp_path):
    assert git_commit(tmp_path) == "unknown"  # not a git checkout
    reports = tmp_path / "docs" / "results" / "vm-2026-12-01"
    reports.mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (reports / "summary.md").write_text("old\n")

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=tmp_path,
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    head = git("rev-parse", "--short", "HEAD")
    (reports / "summary.md").write_text("a new report\n")
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert git_commit(tmp_path / "docs") == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path / "docs") == head + "-dirty"
