"""``python -m core.data list|download FLAG [--size N]``: list or fetch MedMNIST files."""

from __future__ import annotations

from core import cli, info
from core.data import ensure_file, local_status


def main(argv: list[str] | None = None) -> int:
    """``python -m core.data list|download FLAG [--size N]``.

    Args:
        argv: the command-line arguments (default ``sys.argv[1:]``).

    Returns:
        0. An unknown flag or size raises ``ValueError`` and a failed download ``DataError``;
        :func:`core.cli.run` reports either as one ``error:`` line.
    """
    p = cli.ArgumentParser(prog="python -m core.data")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{list,download}")
    sub.add_parser("list", help="which dataset files are present under MEDMNIST_ROOT")
    d = sub.add_parser("download", help="download (or verify) one dataset file")
    d.add_argument("flag")
    d.add_argument("--size", type=int, default=28)
    args = p.parse_args(argv)
    if args.cmd == "list":
        for row in local_status():
            if row["present"] or row["size"] == 28:
                mark = "present" if row["present"] else "missing"
                print(f"{row['flag']:18s} {row['size']:4d}  {mark:8s} {row['path']}")
        return 0
    # an unknown flag or size is refused before a progress bar is drawn
    name = info.file_name(args.flag, args.size)

    from tqdm import tqdm

    with tqdm(unit="B", unit_scale=True, desc=name) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total or None
            bar.n = done
            bar.refresh()

        path = ensure_file(args.flag, args.size, download=True, progress=progress)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
