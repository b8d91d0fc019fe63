"""The refunds demo domain: support tickets, a small payments system and a scripted model.

``refunds.yaml`` is the contract. The modules beside it are what the contract names by
import path, plus what the demo needs to set the world up:

- :mod:`examples.refunds.tickets` — a seeded generator of support tickets, each with the
  ground truth a careful human would act on (kept apart from what the model sees);
- :mod:`examples.refunds.payments` — a real SQLite "payments" system (customers, notes,
  orders, refunds, outbox) at ``$CHARTER_DEMO_PAYMENTS`` (default ``./payments.db``);
- :mod:`examples.refunds.channels` — the readers of ``crm.customer``, ``crm.notes`` and
  ``orders``;
- :mod:`examples.refunds.executors` — ``issue_refund``, ``reverse_refund`` and
  ``send_email``, idempotent on the key the runtime passes;
- :mod:`examples.refunds.model` — ``propose``, a deterministic stand-in for a language
  model that is mostly right and wrong in the ways real models are.

Typical set-up::

    from examples.refunds import payments, tickets

    batch = tickets.generate(300, seed=7)
    payments.seed(batch)
    for ticket in batch:
        submit("refunds", ticket.input)  # the runtime's job
"""
