//! LZMS placeholder replaced below.
use super::{CodecError, Decompress};
pub struct LzmsDecoder;
impl LzmsDecoder {
    pub fn new(_max: usize) -> Result<Self, CodecError> {
        Ok(LzmsDecoder)
    }
}
impl Decompress for LzmsDecoder {
    fn decompress(&mut self, _i: &[u8], _o: &mut [u8]) -> Result<(), CodecError> {
        Err(CodecError::Invalid {
            codec: "LZMS",
            what: "not yet".into(),
        })
    }
}
