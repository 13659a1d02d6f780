//! `chipcard-service-cardinfo`: the cardinfo service process (chipcardd starts it).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    chipcard_service::run(chipcard_cardinfo::CardInfo::default())
}
