#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| zoa_fuzz::targets::recipe_structured::run(data));
