//! A lease lowered into the guest straight from the pool's [`LeaseView`], instead of through
//! the owned record `bindgen!` would generate.
//!
//! Every `acquire` and `release` answers a lease. The generated record would copy the
//! lease's id and each grant's pool, id and data into fresh `String`s and a `Vec`, only for
//! wasmtime to copy them again into guest memory and drop them: five host allocations per
//! lease on the hottest path. [`Lease`] lowers the view's shared names and data in place;
//! the lease id is formatted on the stack.
//!
//! wasmtime's derives cover the records. The leaves that lower as a WIT `string` from a type
//! of ours ([`LeaseText`], [`Data`], and a batch's request payload in `batch.rs`) forward to
//! `str` by hand through [`lower_as_string`], with the trait items
//! wasmtime keeps `#[doc(hidden)]` for its derives; they are checked against the WIT when a
//! component is linked, so a mismatch is a load error, never a bad call.
//!
//! The two answers every request's guest receives, the next request and a lease in brief
//! ([`SingleAnswer`]), are written into guest memory by hand with [`copy_utf8`] and
//! [`Fields`]: the derived lowering looks the guest's memory up through the instance's
//! options once per field (seven or eight times for these), this once per answer.

use super::bindings::resman::jobber::pools as wit;
use crate::pools::record::{Data, LeaseId};
use crate::pools::view::{GrantView, LeaseView, SingleView};
use std::mem::MaybeUninit;
use std::sync::Arc;
use wasmtime::component::__internal::wasmtime_environ::component::StringEncoding;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
};
use wasmtime::component::{ComponentType, Lower};

/// The WIT record `lease`, lowered from a [`LeaseView`] without copying its grants.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct Lease {
    id: LeaseText,
    token: u64,
    holder: u64,
    #[component(name = "expires-at-ms")]
    expires_at_ms: Option<u64>,
    #[component(name = "release-on-disconnect")]
    release_on_disconnect: bool,
    grants: Arc<[GrantView]>,
}

impl From<LeaseView> for Lease {
    fn from(view: LeaseView) -> Self {
        Lease {
            id: LeaseText(view.id),
            token: view.token,
            holder: view.holder,
            expires_at_ms: view.expires_at_ms,
            release_on_disconnect: view.release_on_disconnect,
            grants: view.grants,
        }
    }
}

/// A lease id, which the guest sees as its decimal text.
pub(crate) struct LeaseText(LeaseId);

/// The id's text, formatted into `buffer` (by `itoa`: `write!` through `fmt` costs ten
/// times as much, and this runs for every lease a guest receives).
fn lease_text<'a>(id: &LeaseText, buffer: &'a mut itoa::Buffer) -> &'a str {
    buffer.format(id.0)
}

/// The data's JSON text, as stored.
fn data_text<'a>(data: &'a Data, _: &mut itoa::Buffer) -> &'a str {
    data.as_str()
}

/// Implements `ComponentType` and `Lower` for `$type` as the WIT `string` that the function
/// `$text` makes of it, given a number-formatting buffer on the stack.
macro_rules! lower_as_string {
    ($type:ty, $text:expr) => {
        // SAFETY: the layout, ABI and type check are `str`'s, and lowering hands `str` the
        // text, so every value lowers exactly as the string it stands for.
        unsafe impl ::wasmtime::component::ComponentType for $type {
            type Lower = <str as ::wasmtime::component::ComponentType>::Lower;
            const ABI: ::wasmtime::component::__internal::CanonicalAbiInfo =
                <str as ::wasmtime::component::ComponentType>::ABI;

            fn typecheck(
                ty: &::wasmtime::component::__internal::InterfaceType,
                types: &::wasmtime::component::__internal::InstanceType<'_>,
            ) -> ::wasmtime::Result<()> {
                <str as ::wasmtime::component::ComponentType>::typecheck(ty, types)
            }
        }

        // SAFETY: forwards to `str`'s lowering, see above.
        unsafe impl ::wasmtime::component::Lower for $type {
            fn linear_lower_to_flat<T>(
                &self,
                cx: &mut ::wasmtime::component::__internal::LowerContext<'_, T>,
                ty: ::wasmtime::component::__internal::InterfaceType,
                dst: &mut ::std::mem::MaybeUninit<Self::Lower>,
            ) -> ::wasmtime::Result<()> {
                let mut buffer = ::itoa::Buffer::new();
                let text: &str = $text(self, &mut buffer);
                ::wasmtime::component::Lower::linear_lower_to_flat(text, cx, ty, dst)
            }

            fn linear_lower_to_memory<T>(
                &self,
                cx: &mut ::wasmtime::component::__internal::LowerContext<'_, T>,
                ty: ::wasmtime::component::__internal::InterfaceType,
                offset: usize,
            ) -> ::wasmtime::Result<()> {
                let mut buffer = ::itoa::Buffer::new();
                let text: &str = $text(self, &mut buffer);
                ::wasmtime::component::Lower::linear_lower_to_memory(text, cx, ty, offset)
            }
        }
    };
}

pub(super) use lower_as_string;

/// Copies `text` into the guest's memory as the canonical ABI lowers a `string` for a guest
/// that takes UTF-8 (one `realloc`, then the bytes): its pointer and length. `None` for a
/// guest of another encoding, or a text too long for a guest string, whose lowering is left
/// to wasmtime (which converts it, or words the error).
pub(super) fn copy_utf8<T>(
    cx: &mut LowerContext<'_, T>,
    text: &str,
) -> wasmtime::Result<Option<[u32; 2]>> {
    let len = u32::try_from(text.len()).ok().filter(|&len| len < 1 << 31);
    let (StringEncoding::Utf8, Some(len)) = (cx.options().string_encoding, len) else {
        return Ok(None);
    };
    let ptr = cx.realloc(0, 0, 1, text.len())?;
    cx.as_slice_mut()[ptr..][..text.len()].copy_from_slice(text.as_bytes());
    Ok(Some([u32::try_from(ptr)?, len]))
}

/// A variant's tag and the fields of its case's record, written into guest memory where the
/// canonical ABI lays them out: the tag first, the record after it at the alignment of the
/// whole variant, each field at its own alignment after the one before.
pub(super) struct Fields<'m> {
    memory: &'m mut [u8],
    at: usize,
}

impl<'m> Fields<'m> {
    /// Writes `tag` at `offset` in `memory`, for a variant `variant` (an option or a result).
    pub(super) fn after_tag(
        memory: &'m mut [u8],
        offset: usize,
        tag: u8,
        variant: CanonicalAbiInfo,
    ) -> Self {
        memory[offset] = tag;
        Fields {
            memory,
            at: (offset + 1).next_multiple_of(variant.align32 as usize),
        }
    }

    /// Writes the next field, of WIT type `F`, as `bytes` (little-endian, as the ABI wants).
    pub(super) fn put<F: ComponentType + ?Sized>(&mut self, bytes: &[u8]) -> &mut Self {
        let at = F::ABI.next_field32_size(&mut self.at);
        self.memory[at..][..bytes.len()].copy_from_slice(bytes);
        self
    }

    /// Writes the next field, an `option<u64>`: its tag, and its value when it has one.
    pub(super) fn put_option_u64(&mut self, value: Option<u64>) -> &mut Self {
        let at = <Option<u64>>::ABI.next_field32_size(&mut self.at);
        self.memory[at] = u8::from(value.is_some());
        if let Some(value) = value {
            let value_at = (at + 1).next_multiple_of(<u64>::ALIGN32 as usize);
            self.memory[value_at..][..8].copy_from_slice(&value.to_le_bytes());
        }
        self
    }

    /// Writes the next field, a `string` already copied to `pointer_and_length`.
    pub(super) fn put_string(&mut self, [pointer, length]: [u32; 2]) -> &mut Self {
        let at = <str>::ABI.next_field32_size(&mut self.at);
        self.memory[at..][..4].copy_from_slice(&pointer.to_le_bytes());
        self.memory[at + 4..][..4].copy_from_slice(&length.to_le_bytes());
        self
    }
}

/// What `acquire-single` and `release-single` answer, `result<single-lease, pool-error>`:
/// lowered as wasmtime's derives lower it, except a lease into memory, written by hand (see
/// the module's doc).
pub(crate) struct SingleAnswer(pub(crate) Result<SingleView, wit::PoolError>);

type SingleResult = Result<SingleView, wit::PoolError>;

// SAFETY: the layout, ABI and type check are `SingleResult`'s, and every value lowers to the
// bytes that type's lowering writes (the derived lowering does the rest); the end-to-end
// tests read every field of these answers back from the guest.
unsafe impl ComponentType for SingleAnswer {
    type Lower = <SingleResult as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <SingleResult as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <SingleResult as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: see `ComponentType` above.
unsafe impl Lower for SingleAnswer {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        self.0.linear_lower_to_flat(cx, ty, dst)
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let Ok(lease) = &self.0 else {
            return self.0.linear_lower_to_memory(cx, ty, offset);
        };
        let Some(id) = copy_utf8(cx, &lease.id)? else {
            return self.0.linear_lower_to_memory(cx, ty, offset);
        };
        Fields::after_tag(cx.as_slice_mut(), offset, 0, Self::ABI)
            .put::<u64>(&lease.lease.to_le_bytes())
            .put::<u64>(&lease.token.to_le_bytes())
            .put_option_u64(lease.expires_at_ms)
            .put_string(id);
        Ok(())
    }
}

lower_as_string!(LeaseText, lease_text);
lower_as_string!(Data, data_text);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_id_is_its_decimal_text() {
        let mut buffer = itoa::Buffer::new();
        assert_eq!(lease_text(&LeaseText(0), &mut buffer), "0");
        assert_eq!(lease_text(&LeaseText(42), &mut buffer), "42");
        let max = lease_text(&LeaseText(u64::MAX), &mut buffer).to_owned();
        assert_eq!(max, u64::MAX.to_string());
    }
}
