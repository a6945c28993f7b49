"""The member table: what we believe about every other node, and the rules that change it.

Theory of operation
-------------------
A member is in one of four states. Claims move it between them; every claim carries the
incarnation number its author had in mind, and the rules below (SWIM's, as memberlist
applies them) decide by comparing it with the incarnation we hold:

    current   claim     accepted when            new state   event
    -------   -------   ----------------------   ---------   ---------------------------
    unknown   ALIVE     always                   ALIVE       JOINED
    ALIVE     ALIVE     incarnation newer        ALIVE       UPDATED (if address/tags changed)
    SUSPECT   ALIVE     incarnation newer        ALIVE       REFUTED
    DEAD      ALIVE     incarnation newer        ALIVE       JOINED
    LEFT      ALIVE     incarnation newer        ALIVE       JOINED
    ALIVE     SUSPECT   incarnation same/newer   SUSPECT     SUSPECTED
    SUSPECT   SUSPECT   incarnation same/newer   SUSPECT     (a confirmation, no event)
    ALIVE     DEAD      incarnation same/newer   DEAD        FAILED
    SUSPECT   DEAD      incarnation same/newer   DEAD        FAILED
    ALIVE     LEAVE     incarnation same/newer   LEFT        LEFT
    SUSPECT   LEAVE     incarnation same/newer   LEFT        LEFT
    DEAD      LEAVE     incarnation same/newer   LEFT        LEFT

Everything else is ignored: old incarnations ("ignore old incarnation numbers"), accusations
about members already dead or gone, claims about unknown members other than ALIVE. An
ALIVE at the *same* incarnation never clears a suspicion: only the member itself can, by
refuting with a higher incarnation. A LEAVE is signed by the member itself, so it may turn
DEAD into LEFT. Claims about ourselves are not in this table; the core refutes them.

Signatures were checked when the claims were decoded (`messages.py`): an ALIVE or LEAVE is
by the member itself, a SUSPECT or DEAD by the accuser it names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from nodenet.protocol.identity import NodeId
from nodenet.protocol.messages import Address, Alive, Claim, Dead, Leave, MessageType, Suspect, Tags
from nodenet.protocol.suspicion import Suspicion

__all__ = [
    "TRANSITIONS",
    "EventKind",
    "Member",
    "MemberEvent",
    "MemberInfo",
    "MemberStatus",
    "Rule",
]


class MemberStatus(enum.Enum):
    """What we believe about a member."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


class EventKind(enum.Enum):
    """What changed about a member (or, for REFUTED about ourselves, what we did)."""

    JOINED = "joined"
    UPDATED = "updated"
    SUSPECTED = "suspected"
    REFUTED = "refuted"
    FAILED = "failed"
    LEFT = "left"
    REAPED = "reaped"


class Rule(enum.Enum):
    """How a claim's incarnation must compare with ours for the claim to apply."""

    NEWER = "newer"
    SAME_OR_NEWER = "same or newer"


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of the state table."""

    rule: Rule
    to: MemberStatus
    event: EventKind | None


_A, _S, _D, _L = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT
TRANSITIONS: dict[tuple[MemberStatus, MessageType], Transition] = {
    (_A, MessageType.ALIVE): Transition(Rule.NEWER, _A, EventKind.UPDATED),
    (_S, MessageType.ALIVE): Transition(Rule.NEWER, _A, EventKind.REFUTED),
    (_D, MessageType.ALIVE): Transition(Rule.NEWER, _A, EventKind.JOINED),
    (_L, MessageType.ALIVE): Transition(Rule.NEWER, _A, EventKind.JOINED),
    (_A, MessageType.SUSPECT): Transition(Rule.SAME_OR_NEWER, _S, EventKind.SUSPECTED),
    (_S, MessageType.SUSPECT): Transition(Rule.SAME_OR_NEWER, _S, None),
    (_A, MessageType.DEAD): Transition(Rule.SAME_OR_NEWER, _D, EventKind.FAILED),
    (_S, MessageType.DEAD): Transition(Rule.SAME_OR_NEWER, _D, EventKind.FAILED),
    (_A, MessageType.LEAVE): Transition(Rule.SAME_OR_NEWER, _L, EventKind.LEFT),
    (_S, MessageType.LEAVE): Transition(Rule.SAME_OR_NEWER, _L, EventKind.LEFT),
    (_D, MessageType.LEAVE): Transition(Rule.SAME_OR_NEWER, _L, EventKind.LEFT),
}
"""The state table above, as data: (current state, claim type) → transition."""


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """An immutable snapshot of one member, for events and queries."""

    node: NodeId
    address: Address
    tags: Tags
    status: MemberStatus
    incarnation: int
    changed_at: float
    """When `status` last changed (the core's `now`, monotonic seconds)."""

    @property
    def name(self) -> str:
        """The `name` tag, or the short node id when there is none."""
        return dict(self.tags).get("name") or self.node.short


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """Something changed about `member` at time `at`."""

    kind: EventKind
    member: MemberInfo
    at: float


@dataclass(slots=True)
class Member:
    """The core's mutable record of one member."""

    alive: Alive
    """The newest ALIVE claim: address, tags, and proof the member said so."""
    status: MemberStatus
    incarnation: int
    changed_at: float
    status_claim: Suspect | Dead | Leave | None = None
    """The claim that put the member in its current non-ALIVE state, for push-pull."""
    suspicion: Suspicion | None = None
    speaks_1_1_at: int = -1
    """The incarnation the member was at when its last envelope to us said minor ≥ 1 (-1:
    it said 1.0, or nothing yet). One int per member: a simulation holds 10⁸ of these."""

    @property
    def speaks_1_1(self) -> bool:
        """Whether it decodes protocol 1.1's messages: it said so since it last restarted
        (a restart may have changed its version)."""
        return self.speaks_1_1_at == self.incarnation

    @property
    def node(self) -> NodeId:
        """The member's id."""
        return self.alive.node

    def info(self) -> MemberInfo:
        """A snapshot for the outside world."""
        return MemberInfo(
            node=self.alive.node,
            address=self.alive.address,
            tags=self.alive.tags,
            status=self.status,
            incarnation=self.incarnation,
            changed_at=self.changed_at,
        )

    def transition_for(self, claim: Claim) -> Transition | None:
        """The table row `claim` triggers, or None if the claim is to be ignored."""
        row = TRANSITIONS.get((self.status, claim.TYPE))
        if row is None:
            return None
        if row.rule is Rule.NEWER:
            applies = claim.incarnation > self.incarnation
        else:
            applies = claim.incarnation >= self.incarnation
        return row if applies else None
