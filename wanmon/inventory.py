"""The sites as a hierarchy: province bodies, then each district with its communes."""

from __future__ import annotations

from dataclasses import dataclass, field

from wanmon.config import LEVELS, Config, Site


@dataclass(frozen=True, slots=True)
class District:
    name: str
    sites: tuple[Site, ...]  # district-level sites (UBND, administration centre...)
    communes: tuple[Site, ...]


@dataclass(frozen=True, slots=True)
class Inventory:
    sites: tuple[Site, ...]
    by_id: dict[str, Site] = field(default_factory=dict)
    province: tuple[Site, ...] = ()
    districts: tuple[District, ...] = ()

    @classmethod
    def from_config(cls, cfg: Config) -> Inventory:
        sites = cfg.sites
        order: list[str] = []
        for s in sites:
            if s.district and s.district not in order:
                order.append(s.district)
        districts = tuple(
            District(
                name=d,
                sites=tuple(s for s in sites if s.level == "district" and s.district == d),
                communes=tuple(s for s in sites if s.level == "commune" and s.district == d),
            )
            for d in order
        )
        return cls(
            sites=sites,
            by_id={s.id: s for s in sites},
            province=tuple(s for s in sites if s.level == "province"),
            districts=districts,
        )

    def ordered(self) -> list[Site]:
        """Province bodies, then per district: its district-level sites, then its communes."""
        out = list(self.province)
        for d in self.districts:
            out.extend(d.sites)
            out.extend(d.communes)
        return out

    def level_counts(self) -> dict[str, int]:
        counts = {lv: 0 for lv in LEVELS}
        for s in self.sites:
            counts[s.level] += 1
        return counts
