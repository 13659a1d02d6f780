//! Configurations the end-to-end tests start chipcardd with.

/// One emulated driver with two readers: "Emul Reader 0" (KEYPAD) holding a card with PIN
/// 1234, and "Emul Reader 1" (no flags) empty; a control socket at `{control}`.
pub const EMUL_TWO_READERS: &str = r#"
server {
  socket="{socket}"
}
driver {
  type="emul"
  name="emul"
  controlSocket="{control}"
  vars {
    vendor="chipcard tests"
  }
  reader {
    name="Emul Reader 0"
    flags="KEYPAD"
    slots="1"
    card {
      slot="0"
      atr="3B8880010000000000000000"
      pin="1234"
    }
  }
  reader {
    name="Emul Reader 1"
    slots="1"
  }
}
"#;

/// An ATR used by tests that insert cards (a generic T=1 processor card).
pub const TEST_ATR: &str = "3B8880010000000000000000";

/// The ATR of a ddv0 banking card, for card-type tests.
pub const DDV0_ATR: &str = "3BEF00FF8131FE4565630D02310250001090";
