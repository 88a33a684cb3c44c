//! Typed queues (issue 11): values of one plain-old-data type instead of bytes,
//! with the type recorded in the segment so that both sides agree on it.
//!
//! [`MessageType`] describes a type (name, size, alignment, the user's schema
//! version); a segment created for one records it, and attaching with another is
//! [`Error::TypeMismatch`], naming both. [`TypedQueue`] (cargo feature `zerocopy`)
//! sends and receives values of any `T: FromBytes + IntoBytes + Immutable +
//! KnownLayout` (zerocopy's derivable traits), by copy, in place and in batches.

use crate::layout::{fnv1a, Schema, SCHEMA_NAME_BYTES};

/// A message type as a segment records it.
///
/// ```
/// let t = shmq::MessageType::new("orders::Fill", 24, 8, 2);
/// assert_eq!(t.to_string(), "`orders::Fill` (24 bytes, align 8, schema v2)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageType {
    /// The type's name (as recorded: at most 48 bytes are kept in the segment; the
    /// comparison uses a hash of the full name).
    pub name: String,
    /// Its size in bytes.
    pub size: u32,
    /// Its alignment in bytes.
    pub align: u32,
    /// The user's schema version: bump it when the type's meaning changes but its
    /// name and size do not.
    pub version: u32,
    /// Hash of the full name (what is compared).
    name_hash: u64,
}

impl MessageType {
    /// Describes a type by name, size, alignment and schema version.
    pub fn new(name: &str, size: u32, align: u32, version: u32) -> Self {
        Self {
            name: name.to_owned(),
            size,
            align,
            version,
            name_hash: fnv1a(name.as_bytes()) | 1,
        }
    }

    /// `T` as a message type: its `std::any::type_name` (stable within one build
    /// of one program; give both sides the same name with [`MessageType::new`] if
    /// they are different programs), size and alignment.
    ///
    /// ```
    /// let t = shmq::MessageType::of::<u64>(1);
    /// assert_eq!((t.name.as_str(), t.size, t.align, t.version), ("u64", 8, 8, 1));
    /// ```
    pub fn of<T>(version: u32) -> Self {
        Self::new(
            std::any::type_name::<T>(),
            std::mem::size_of::<T>() as u32,
            std::mem::align_of::<T>() as u32,
            version,
        )
    }

    /// Whether a segment recording `other` holds messages of this type.
    pub fn matches(&self, other: &MessageType) -> bool {
        self.name_hash == other.name_hash
            && (self.size, self.align, self.version) == (other.size, other.align, other.version)
    }

    /// The segment record of this type.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn schema(&self) -> Schema {
        let mut name = [0u8; SCHEMA_NAME_BYTES];
        let kept = cut(&self.name, SCHEMA_NAME_BYTES);
        name[..kept.len()].copy_from_slice(kept.as_bytes());
        Schema {
            name_hash: self.name_hash,
            size: self.size,
            align: self.align,
            version: self.version,
            name_len: kept.len() as u32,
            name,
        }
    }

    /// The type a segment records, if any (`None`: untyped). Read from shared
    /// memory: the name is cut to its stored length and decoded lossily.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn from_schema(schema: &Schema) -> Option<Self> {
        if schema.name_hash == 0 {
            return None;
        }
        let len = (schema.name_len as usize).min(SCHEMA_NAME_BYTES);
        Some(Self {
            name: String::from_utf8_lossy(&schema.name[..len]).into_owned(),
            size: schema.size,
            align: schema.align,
            version: schema.version,
            name_hash: schema.name_hash,
        })
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` ({} bytes, align {}, schema v{})",
            self.name, self.size, self.align, self.version
        )
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character.
#[cfg_attr(loom, allow(dead_code))]
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(feature = "zerocopy")]
pub use delivery::{TypedAbandonError, TypedDelivery};
#[cfg(feature = "zerocopy")]
pub use queue::TypedQueue;

#[cfg(feature = "zerocopy")]
mod delivery;
#[cfg(feature = "zerocopy")]
mod queue;
