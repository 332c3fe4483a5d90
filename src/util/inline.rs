//! Bytes kept inline up to a fixed size and on the heap past it, so that
//! the short keys most requests make cost no allocation.

use std::hash::{Hash, Hasher};

/// Up to `N` bytes inline (`N` at most 255), more on the heap. Equality,
/// ordering of the content and hashing look at the bytes only, never at
/// where they are kept.
#[derive(Clone)]
pub(crate) enum InlineBytes<const N: usize> {
    Inline { len: u8, bytes: [u8; N] },
    Heap(Vec<u8>),
}

impl<const N: usize> InlineBytes<N> {
    pub(crate) fn new() -> Self {
        InlineBytes::Inline {
            len: 0,
            bytes: [0; N],
        }
    }

    /// Empty, with room for `capacity` bytes: on the heap at once when
    /// they will not fit inline.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        if capacity > N || capacity > usize::from(u8::MAX) {
            InlineBytes::Heap(Vec::with_capacity(capacity))
        } else {
            InlineBytes::new()
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, byte: u8) {
        if let InlineBytes::Inline { len, bytes } = self {
            if let (Some(slot), Some(end)) = (bytes.get_mut(usize::from(*len)), len.checked_add(1))
            {
                *slot = byte;
                *len = end;
                return;
            }
        }
        self.extend_from_slice(&[byte]);
    }

    /// Appends `more`. The inline case is small enough to inline at every
    /// call site (keys are built from a dozen short pieces); moving to the
    /// heap is out of line.
    #[inline]
    pub(crate) fn extend_from_slice(&mut self, more: &[u8]) {
        match self {
            InlineBytes::Inline { len, bytes } => {
                let at = usize::from(*len);
                let end = at + more.len();
                match (bytes.get_mut(at..end), u8::try_from(end)) {
                    (Some(room), Ok(end)) => {
                        room.copy_from_slice(more);
                        *len = end;
                    }
                    _ => self.spill(more),
                }
            }
            InlineBytes::Heap(heap) => heap.extend_from_slice(more),
        }
    }

    /// Moves the bytes to the heap, with `more` after them.
    #[cold]
    #[inline(never)]
    fn spill(&mut self, more: &[u8]) {
        let mut heap = Vec::with_capacity(2 * (self.len() + more.len()));
        heap.extend_from_slice(self);
        heap.extend_from_slice(more);
        *self = InlineBytes::Heap(heap);
    }

    #[cfg(test)]
    pub(crate) fn spilled(&self) -> bool {
        matches!(self, InlineBytes::Heap(_))
    }
}

#[cfg(test)]
impl<const N: usize> From<&[u8]> for InlineBytes<N> {
    fn from(bytes: &[u8]) -> Self {
        let mut out = InlineBytes::new();
        out.extend_from_slice(bytes);
        out
    }
}

impl<const N: usize> std::ops::Deref for InlineBytes<N> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            InlineBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            InlineBytes::Heap(heap) => heap,
        }
    }
}

impl<const N: usize> std::fmt::Debug for InlineBytes<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&String::from_utf8_lossy(self), f)
    }
}

impl<const N: usize> PartialEq for InlineBytes<N> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<const N: usize> Eq for InlineBytes<N> {}

impl<const N: usize> Hash for InlineBytes<N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_of(bytes: &InlineBytes<8>) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn bytes_move_to_the_heap_past_the_inline_room_and_none_is_lost() {
        let mut expected = Vec::new();
        let mut bytes = InlineBytes::<16>::new();
        for i in 0..100u32 {
            let piece = [(i % 251) as u8; 3];
            let piece = &piece[..(i % 3) as usize + 1];
            bytes.extend_from_slice(piece);
            bytes.push(0);
            expected.extend_from_slice(piece);
            expected.push(0);
            assert_eq!(&*bytes, &expected[..], "after {i} pieces");
            assert_eq!(bytes.spilled(), expected.len() > 16);
        }
    }

    #[test]
    fn where_the_bytes_are_kept_changes_no_comparison() {
        let inline = InlineBytes::<8>::from(&b"/a"[..]);
        let heap = InlineBytes::<8>::Heap(b"/a".to_vec());
        assert!(!inline.spilled() && heap.spilled());
        assert_eq!(inline, heap);
        assert_eq!(hash_of(&inline), hash_of(&heap));
        assert_ne!(inline, InlineBytes::<8>::from(&b"/b"[..]));
        assert!(InlineBytes::<8>::with_capacity(9).spilled());
        assert!(!InlineBytes::<8>::with_capacity(8).spilled());
        // 255 is the most an inline length can say.
        let big = InlineBytes::<255>::from(&[7u8; 255][..]);
        assert!(!big.spilled());
        let mut bigger = big.clone();
        bigger.push(7);
        assert!(bigger.spilled() && bigger.len() == 256);
    }
}
