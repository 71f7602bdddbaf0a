"""Where an issuer's CRLs live (R19, R20): one URL template is the single source for the CDP
written into certificates, the publish path, the IDP URI and the CCADB disclosure list.

A certificate's partition is chosen once, when it is issued, and stored at ingest; it never
moves when the partition count or the clock changes (a moving boundary once dropped revoked
entries from a real CA's CRLs).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

PLACEHOLDER = "{partition}"


class LayoutError(ValueError):
    pass


@dataclass(frozen=True)
class CrlLayout:
    issuer: str
    url_template: str
    partitions: int = 1

    def __post_init__(self) -> None:
        problems = layout_problems(self.url_template, self.partitions)
        if problems:
            raise LayoutError("; ".join(problems))

    def url(self, partition: int) -> str:
        return self.url_template.replace("{issuer}", self.issuer).replace(
            PLACEHOLDER, str(partition)
        )

    def path(self, partition: int) -> str:
        """The HTTP path the responder serves this partition's CRL at."""
        return urlsplit(self.url(partition)).path

    def partition_for_serial(self, serial: int) -> int:
        """The partition a CA should write into a new certificate's CDP."""
        return serial % self.partitions

    def partition_from_url(self, url: str) -> int | None:
        """The partition a CDP URL names, if it is one of this layout's URLs."""
        match = self._url_pattern.fullmatch(url)
        return int(match.group(1)) if match else None

    def partition_from_path(self, path: str) -> int | None:
        match = self._path_pattern.fullmatch(path)
        return int(match.group(1)) if match else None

    def published(self, in_use: Iterable[int] = ()) -> list[int]:
        """Every partition that must be published: the configured ones and any that still hold
        certificates from an earlier, larger partition count."""
        return sorted(set(range(self.partitions)) | set(in_use))

    @property
    def _url_pattern(self) -> re.Pattern[str]:
        return _pattern(self.url_template.replace("{issuer}", self.issuer))

    @property
    def _path_pattern(self) -> re.Pattern[str]:
        return _pattern(urlsplit(self.url_template.replace("{issuer}", self.issuer)).path)


def _pattern(template: str) -> re.Pattern[str]:
    before, _, after = template.partition(PLACEHOLDER)
    return re.compile(re.escape(before) + r"(0|[1-9][0-9]{0,5})" + re.escape(after))


def layout_problems(url_template: str, partitions: int) -> list[str]:
    problems = []
    if url_template.count(PLACEHOLDER) != 1:
        problems.append("crl_url must contain {partition} exactly once")
    parts = urlsplit(url_template)
    if parts.scheme != "http" or not parts.netloc:
        problems.append("crl_url must be a plain http:// URL with a host (R15, BR 7.1.2.11.2)")
    if not parts.path.endswith(".crl") or PLACEHOLDER not in parts.path:
        problems.append("crl_url's path must contain {partition} and end in .crl")
    if parts.query or parts.fragment:
        problems.append("crl_url must not have a query or fragment")
    if not 1 <= partitions <= 10_000:
        problems.append("crl_partitions must be between 1 and 10000")
    return problems
