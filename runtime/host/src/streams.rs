//! WASI streams that never need a tokio runtime, so a model call may run on an async
//! runtime's worker thread.
//!
//! wasmtime-wasi's synchronous bindings run every *blocking* stream operation
//! (`blocking-write-and-flush`, the drop of a stream handle, ...) through
//! `in_tokio`, which enters the ambient tokio runtime and panics on a tokio worker
//! ("cannot start a runtime from within a runtime"). A model writing to stderr (every
//! Rust panic message does) would panic the host. The sandbox's only streams are
//! in-memory pipes, whose operations complete at once: here each blocking operation is
//! polled once, and only a stream that is not ready (none in the sandbox) falls back to
//! wasmtime-wasi's own path.

use crate::sandbox::Sandbox;
use std::future::Future;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::p2::bindings::sync::io::poll::Pollable;
use wasmtime_wasi::p2::bindings::sync::io::streams::{self, InputStream, OutputStream};
use wasmtime_wasi::p2::{StreamError, StreamResult};
use wasmtime_wasi_io::bindings::wasi::io::streams::{
    HostInputStream as AsyncInput, HostOutputStream as AsyncOutput,
};

/// The sandbox's resource table seen as `wasi:io/streams`.
struct Streams<'a>(&'a mut ResourceTable);

struct HasStreams;

impl HasData for HasStreams {
    type Data<'a> = Streams<'a>;
}

/// Replaces `wasi:io/streams` of a linker that already has wasmtime-wasi's synchronous
/// WASI (`add_to_linker_sync`).
pub(crate) fn shadow_streams(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let result = streams::add_to_linker::<Sandbox, HasStreams>(linker, |s| Streams(s.ctx().table));
    linker.allow_shadowing(false);
    result
}

/// The future's output if it is ready on the first poll (always, for memory pipes),
/// else wasmtime-wasi's path (which needs a thread outside any tokio runtime).
fn now<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match wasmtime_wasi::runtime::poll_noop(future.as_mut()) {
        Some(output) => output,
        None => wasmtime_wasi::runtime::in_tokio(future),
    }
}

impl streams::Host for Streams<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        streams::Host::convert_stream_error(self.0, err)
    }
}

impl streams::HostOutputStream for Streams<'_> {
    fn drop(&mut self, stream: Resource<OutputStream>) -> wasmtime::Result<()> {
        now(AsyncOutput::drop(self.0, stream))
    }

    fn check_write(&mut self, stream: Resource<OutputStream>) -> StreamResult<u64> {
        streams::HostOutputStream::check_write(self.0, stream)
    }

    fn write(&mut self, stream: Resource<OutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        streams::HostOutputStream::write(self.0, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<OutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        now(AsyncOutput::blocking_write_and_flush(self.0, stream, bytes))
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<OutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        now(AsyncOutput::blocking_write_zeroes_and_flush(self.0, stream, len))
    }

    fn subscribe(&mut self, stream: Resource<OutputStream>) -> wasmtime::Result<Resource<Pollable>> {
        streams::HostOutputStream::subscribe(self.0, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<OutputStream>, len: u64) -> StreamResult<()> {
        streams::HostOutputStream::write_zeroes(self.0, stream, len)
    }

    fn flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        streams::HostOutputStream::flush(self.0, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        now(AsyncOutput::blocking_flush(self.0, stream))
    }

    fn splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        streams::HostOutputStream::splice(self.0, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        now(AsyncOutput::blocking_splice(self.0, dst, src, len))
    }
}

impl streams::HostInputStream for Streams<'_> {
    fn drop(&mut self, stream: Resource<InputStream>) -> wasmtime::Result<()> {
        now(AsyncInput::drop(self.0, stream))
    }

    fn read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        streams::HostInputStream::read(self.0, stream, len)
    }

    fn blocking_read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        now(AsyncInput::blocking_read(self.0, stream, len))
    }

    fn skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        streams::HostInputStream::skip(self.0, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        now(AsyncInput::blocking_skip(self.0, stream, len))
    }

    fn subscribe(&mut self, stream: Resource<InputStream>) -> wasmtime::Result<Resource<Pollable>> {
        streams::HostInputStream::subscribe(self.0, stream)
    }
}
