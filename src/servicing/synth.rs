// TEMP-STUB
#[derive(Clone, Copy)]
pub enum SynthKind {
    Guest,
}
impl SynthKind {
    pub const ALL: &'static [SynthKind] = &[SynthKind::Guest];
}
pub fn marker_path(_k: SynthKind) -> String {
    String::new()
}
pub fn cab_name(_k: SynthKind) -> String {
    String::new()
}
pub fn synthetic_package(_k: SynthKind, _l: Option<&str>) -> Vec<(String, Vec<u8>)> {
    vec![]
}
pub fn write_cab(_p: &std::path::Path, _m: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    Ok(())
}
