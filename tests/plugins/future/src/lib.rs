//! Test fixture: a plugin built against a newer, incompatible version of the contract
//! (`quiver:plugin@0.2.0`). Loading it must say which version it wants and which the host speaks.

#![allow(missing_docs)]

wit_bindgen::generate!({
    inline: "
        package quiver:plugin@0.2.0;
        interface transformer {
            describe: func() -> string;
            transform: func(input: list<u8>) -> list<u8>;
        }
        world next {
            export transformer;
        }
    ",
    world: "next",
});

struct Future;

impl exports::quiver::plugin::transformer::Guest for Future {
    fn describe() -> String {
        "from the future".into()
    }
    fn transform(input: Vec<u8>) -> Vec<u8> {
        input
    }
}

export!(Future);
