"""The task state machine: the only legal moves (an illegal one is a 409 over REST).

draft ──confirm──▶ queued ──▶ running ──▶ completed
  │                  │           └──────▶ failed
  ├──▶ expired       ├──▶ expired
  └──cancel──▶ cancelled ◀──cancel── (queued, running)
"""

STATES = ("draft", "queued", "running", "completed", "failed", "cancelled", "expired")
PENDING = ("draft", "queued", "running")
TERMINAL = ("completed", "failed", "cancelled", "expired")

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "draft": ("queued", "cancelled", "expired"),
    "queued": ("running", "cancelled", "expired"),
    "running": ("completed", "failed", "cancelled"),
    "completed": (),
    "failed": (),
    "cancelled": (),
    "expired": (),
}


def sources_of(target: str) -> tuple[str, ...]:
    """The states from which ``target`` may be reached."""
    return tuple(s for s, targets in TRANSITIONS.items() if target in targets)
