"""``python -m examples.invoices [N] [--seed-only]``: seed the AP system with N generated
invoices (default 60) and run them all, printing a summary; with ``--seed-only``, only seed
them (then submit single invoices with ``charter run start``). Uses a real model when one
is configured (see :func:`examples.invoices.demo.choose_model`)."""

from __future__ import annotations

import json
import sys

from charter import Runtime
from examples.invoices import ap
from examples.invoices.demo import choose_model, run


def main(argv: list[str]) -> None:
    seed_only = "--seed-only" in argv
    numbers = [a for a in argv if a.isdigit()]
    count = int(numbers[0]) if numbers else 60
    if seed_only:
        suppliers, cases = ap.generate(count)
        ap.seed(suppliers, cases)
        print(
            f"seeded {len(cases)} open invoices ({cases[0].invoice_id} … {cases[-1].invoice_id}) in {ap.path()}"
        )
        return
    runtime = Runtime("invoices-ledger.db")
    summary = run(runtime, invoices=count, model=choose_model())
    print(json.dumps(summary, indent=2))
    print(
        "next: charter report --db invoices-ledger.db; charter review list --db invoices-ledger.db"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
