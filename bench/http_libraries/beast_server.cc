// A minimal HTTP/1.1 server on Boost.Beast for bench/http_libraries.sh: one thread per
// connection (as cpp-httplib serves), keep-alive, answers every request with a fixed JSON body
// of the size of a classification reply. Not part of vitserve: it measures the library alone.
//   beast_server PORT
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <cstdlib>
#include <string>
#include <thread>
#include <utility>

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = boost::asio::ip::tcp;

void ServeConnection(tcp::socket socket, const std::string* reply) {
  beast::flat_buffer buffer;
  beast::error_code error;
  while (true) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    http::read(socket, buffer, parser, error);
    if (error) break;
    const http::request<http::string_body>& request = parser.get();
    http::response<http::string_body> response{http::status::ok, request.version()};
    response.set(http::field::content_type, "application/json");
    response.keep_alive(request.keep_alive());
    response.body() = *reply;
    response.prepare_payload();
    http::write(socket, response, error);
    if (error || !response.keep_alive()) break;
  }
  socket.shutdown(tcp::socket::shutdown_send, error);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const auto port = static_cast<unsigned short>(std::atoi(argv[1]));
  static const std::string reply = "{\"results\":[" + std::string(1000, ' ') + "]}";
  boost::asio::io_context context{1};
  tcp::acceptor acceptor{context, {boost::asio::ip::make_address("127.0.0.1"), port}};
  while (true) {
    tcp::socket socket{context};
    acceptor.accept(socket);
    std::thread(ServeConnection, std::move(socket), &reply).detach();
  }
}
