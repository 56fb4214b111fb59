"""Transparent huge pages: what one write to a shared huge page copies.

Linux 5.8 and later split the huge page and copy the written 4 KiB page
("thp: change CoW semantics for anon-THP"); older kernels copied all 2 MiB.
"""

from cowmem.asv import samples

from .common import HUGE_PAGE, copied_bytes, huge_page_buffer, write_one_byte_every

HUGE_PAGES = 16  # 32 MiB


class HugePages:
    """KiB copied per write, one byte written in each of k huge pages (n/a without THP)."""

    params = [[1, 4, HUGE_PAGES]]
    param_names = ["huge_pages_written"]
    unit = "KiB per write"

    def setup(self, huge_pages_written):
        self.buffer = huge_page_buffer(HUGE_PAGES)

    def track_kib_copied_per_write(self, huge_pages_written):
        writes = write_one_byte_every(self.buffer.array, huge_pages_written, HUGE_PAGE)
        return samples(b / 1024 / huge_pages_written for b in copied_bytes(self.buffer.range, writes))
