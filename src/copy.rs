//! Byte copies sized for queue messages.
//!
//! Messages are mostly small. `copy_from_slice` on a length known only at run time
//! becomes a call to the C library's `memmove`, whose call and size dispatch cost a
//! few nanoseconds: as much as the rest of a send. Up to 64 bytes we copy inline
//! with two possibly overlapping unaligned moves instead; longer messages still go
//! to `memmove`, which is the right tool there.

/// Copies `src` to the start of `dst`, which must be at least as long.
#[inline(always)]
pub(crate) fn copy_prefix(dst: &mut [u8], src: &[u8]) {
    assert!(src.len() <= dst.len(), "copy_prefix: destination too short");
    // SAFETY: both ranges are valid for src.len() bytes (checked just above) and
    // cannot overlap (a shared and a unique borrow).
    unsafe { copy_bytes(src.as_ptr(), dst.as_mut_ptr(), src.len()) }
}

/// Copies `len` bytes from `src` to `dst`.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `len` bytes, and the two
/// ranges must not overlap.
#[inline(always)]
pub(crate) unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize) {
    /// Two moves of `N` bytes: the first `N` and the last `N` (overlapping when
    /// `len < 2N`), for `N <= len <= 2N`.
    #[inline(always)]
    unsafe fn two<const N: usize>(src: *const u8, dst: *mut u8, len: usize) {
        // SAFETY: N <= len, so [0, N) and [len - N, len) lie inside the source range
        // (the caller's contract); unaligned reads have no alignment requirement.
        let (head, tail) = unsafe {
            (
                src.cast::<[u8; N]>().read_unaligned(),
                src.add(len - N).cast::<[u8; N]>().read_unaligned(),
            )
        };
        // SAFETY: as above, for the destination range; both values were read before
        // either write, and the ranges do not overlap.
        unsafe {
            dst.cast::<[u8; N]>().write_unaligned(head);
            dst.add(len - N).cast::<[u8; N]>().write_unaligned(tail);
        }
    }
    // SAFETY: each branch's length bounds satisfy `two`'s N <= len <= 2N; the rest
    // is the caller's contract passed on.
    unsafe {
        match len {
            32..=64 => two::<32>(src, dst, len),
            16..=31 => two::<16>(src, dst, len),
            8..=15 => two::<8>(src, dst, len),
            _ => std::ptr::copy_nonoverlapping(src, dst, len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_up_to_200_copies_exactly_and_nothing_more() {
        let src: Vec<u8> = (0..200u8)
            .map(|b| b.wrapping_mul(7).wrapping_add(1))
            .collect();
        for len in 0..=200 {
            let mut dst = vec![0xEEu8; 210];
            copy_prefix(&mut dst, &src[..len]);
            assert_eq!(&dst[..len], &src[..len], "len {len}");
            assert!(
                dst[len..].iter().all(|&b| b == 0xEE),
                "len {len} wrote past the end"
            );
        }
    }

    #[test]
    #[should_panic(expected = "destination too short")]
    fn a_short_destination_panics() {
        copy_prefix(&mut [0u8; 3], &[1u8; 4]);
    }
}
