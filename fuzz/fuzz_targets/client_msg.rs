//! The signaling message decoder: any text a client sends on the WebSocket goes through `ClientMsg::parse` first.
//! It must answer every input with a message or a `ParseError` (a code for the `error` reply), never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use courier_protocol::ClientMsg;

fuzz_target!(|data: &[u8]| {
    // The socket only hands text frames (valid UTF-8) to the parser.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(msg) = ClientMsg::parse(text) {
            // What the session asks of every parsed message.
            let _ = msg.type_name();
            let _ = msg.is_chat();
            let _ = msg.is_chat_message();
        }
    }
});
