"""Who is calling, as every front door knows it once it has admitted the caller: the API's key
check builds one from a client, the bot's admission from a merchant."""

from __future__ import annotations

from dataclasses import dataclass

from core.store.tables import ActorRole


@dataclass(frozen=True)
class Principal:
    actor: str
    """What their labels are recorded as."""
    tenant: str
    """Whose reviews they own."""
    is_admin: bool

    @property
    def scope(self) -> str | None:
        """The tenant whose reviews they may see and label: their own, or everyone's (None)
        for an admin."""
        return None if self.is_admin else self.tenant

    @property
    def role(self) -> ActorRole:
        return ActorRole.ADMIN if self.is_admin else ActorRole.MERCHANT

    def actor_for(self, name: str | None) -> str:
        """The actor a label is recorded as when given for ``name`` (a platform's merchant):
        ``<actor>/<name>``, one voice with the principal's."""
        return self.actor if name is None else f"{self.actor}/{name}"
