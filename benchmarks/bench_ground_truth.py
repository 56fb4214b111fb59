"""Ground truth: a child that writes one byte in each of k pages of a buffer copies exactly k pages."""

from cowmem import PAGE_SIZE
from cowmem.asv import samples

from .common import GROUND_TRUTH_PAGES, buffer_range, copied_bytes, filled_buffer, write_one_byte_every


class GroundTruth:
    """Pages copied inside the buffer; must equal ``pages_written`` (numpy gives its 64 MiB huge pages)."""

    params = [["bytearray", "ndarray"], [0, 1, 10, 1000, 10000]]
    param_names = ["buffer", "pages_written"]
    unit = "pages"

    def setup(self, buffer, pages_written):
        self.buffer = filled_buffer(buffer, GROUND_TRUTH_PAGES)
        self.range = buffer_range(self.buffer)  # its bytes, not the header whose refcount the child may write
        self.access = write_one_byte_every(self.buffer, pages_written, PAGE_SIZE)

    def track_copied_pages(self, buffer, pages_written):
        return samples(b // PAGE_SIZE for b in copied_bytes(self.range, self.access))
