//! `QXLDrawable` / `QXLCompatDrawable` decoding (being filled in).

use spice_server::command::Drawable;

use super::Ctx;
use crate::error::{Error, Result};
use crate::qxl::guest::GuestView;

/// Decode the drawable at `phys`.
pub(crate) fn decode_drawable<V: GuestView + ?Sized>(
    _ctx: &mut Ctx<'_, V>,
    _phys: u64,
) -> Result<Drawable> {
    Err(Error::Malformed("drawable decoding not implemented yet"))
}
