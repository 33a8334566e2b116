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
use std::sync::Arc;
use wasmtime::component::__internal::wasmtime_environ::component::StringEncoding;
use wasmtime::component::__internal::{CanonicalAbiInfo, LowerContext};
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

/// Implements `ComponentType` for `$type` as `$as`'s (the same layout, ABI and type check),
/// and `Lower` with the two bodies given, which must write exactly the bytes `$as`'s lowering
/// would: `$this` is the value, `$cx` the lowering context, `$ty` the WIT type, `$dst` the
/// flat values to fill, `$offset` where in memory the value goes.
macro_rules! lower_like {
    (
        $type:ty as $as:ty,
        flat($this:ident, $cx:ident, $ty:ident, $dst:ident) $flat:block,
        memory($this_m:ident, $cx_m:ident, $ty_m:ident, $offset:ident) $memory:block
    ) => {
        // SAFETY: the caller's bodies write what `$as`'s lowering writes.
        unsafe impl ::wasmtime::component::ComponentType for $type {
            type Lower = <$as as ::wasmtime::component::ComponentType>::Lower;
            const ABI: ::wasmtime::component::__internal::CanonicalAbiInfo =
                <$as as ::wasmtime::component::ComponentType>::ABI;

            fn typecheck(
                ty: &::wasmtime::component::__internal::InterfaceType,
                types: &::wasmtime::component::__internal::InstanceType<'_>,
            ) -> ::wasmtime::Result<()> {
                <$as as ::wasmtime::component::ComponentType>::typecheck(ty, types)
            }
        }

        // SAFETY: see above.
        unsafe impl ::wasmtime::component::Lower for $type {
            fn linear_lower_to_flat<T>(
                &self,
                $cx: &mut ::wasmtime::component::__internal::LowerContext<'_, T>,
                $ty: ::wasmtime::component::__internal::InterfaceType,
                $dst: &mut ::std::mem::MaybeUninit<Self::Lower>,
            ) -> ::wasmtime::Result<()> {
                let $this = self;
                $flat
            }

            fn linear_lower_to_memory<T>(
                &self,
                $cx_m: &mut ::wasmtime::component::__internal::LowerContext<'_, T>,
                $ty_m: ::wasmtime::component::__internal::InterfaceType,
                $offset: usize,
            ) -> ::wasmtime::Result<()> {
                let $this_m = self;
                $memory
            }
        }
    };
}

pub(super) use lower_like;

/// Implements `ComponentType` and `Lower` for `$type` as the WIT `string` that the function
/// `$text` makes of it, given a number-formatting buffer on the stack.
macro_rules! lower_as_string {
    ($type:ty, $text:expr) => {
        // Lowering hands `str` the text, so every value lowers as the string it stands for.
        $crate::plugins::wasm::lower::lower_like!(
            $type as str,
            flat(this, cx, ty, dst) {
                let mut buffer = ::itoa::Buffer::new();
                let text: &str = $text(this, &mut buffer);
                ::wasmtime::component::Lower::linear_lower_to_flat(text, cx, ty, dst)
            },
            memory(this, cx, ty, offset) {
                let mut buffer = ::itoa::Buffer::new();
                let text: &str = $text(this, &mut buffer);
                ::wasmtime::component::Lower::linear_lower_to_memory(text, cx, ty, offset)
            }
        );
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

/// Implements `ComponentType` and `Lower` for `$wrapper`, a newtype over `$inner`, as
/// `$inner`'s (wasmtime's derives), except that lowering into memory first tries `$write`
/// (`fn(&$inner, cx, offset) -> wasmtime::Result<bool>`), which writes the value by hand and
/// answers `true`, or answers `false` to leave it to `$inner`'s lowering.
macro_rules! lower_by_hand {
    ($wrapper:ty, $inner:ty, $write:expr) => {
        // `$write` writes the bytes `$inner`'s lowering writes (tests read every field back
        // from a guest).
        $crate::plugins::wasm::lower::lower_like!(
            $wrapper as $inner,
            flat(this, cx, ty, dst) {
                ::wasmtime::component::Lower::linear_lower_to_flat(&this.0, cx, ty, dst)
            },
            memory(this, cx, ty, offset) {
                if $write(&this.0, cx, offset)? {
                    return Ok(());
                }
                ::wasmtime::component::Lower::linear_lower_to_memory(&this.0, cx, ty, offset)
            }
        );
    };
}

pub(super) use lower_by_hand;

/// What `acquire-single` and `release-single` answer, `result<single-lease, pool-error>`:
/// lowered as wasmtime's derives lower it, except a lease into memory, written by hand (see
/// the module's doc).
pub(crate) struct SingleAnswer(pub(crate) Result<SingleView, wit::PoolError>);

lower_by_hand!(SingleAnswer, Result<SingleView, wit::PoolError>, write_single);

/// Writes a lease in brief at `offset`, as `result`'s `ok`; `false` for anything else.
fn write_single<T>(
    answer: &Result<SingleView, wit::PoolError>,
    cx: &mut LowerContext<'_, T>,
    offset: usize,
) -> wasmtime::Result<bool> {
    let Ok(lease) = answer else {
        return Ok(false);
    };
    let Some(id) = copy_utf8(cx, &lease.id)? else {
        return Ok(false);
    };
    let abi = <SingleAnswer as ComponentType>::ABI;
    Fields::after_tag(cx.as_slice_mut(), offset, 0, abi)
        .put::<u64>(&lease.lease.to_le_bytes())
        .put::<u64>(&lease.token.to_le_bytes())
        .put_option_u64(lease.expires_at_ms)
        .put_string(id);
    Ok(true)
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
