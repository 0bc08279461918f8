import java.lang.reflect.Field;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

/**
 * Starts DynamoDB Local listening on 127.0.0.1 only.
 *
 * <p>DynamoDB Local has no bind-host flag and listens on every interface. This builds its server
 * from the usual arguments (e.g. {@code -inMemory -port 8000 -disableTelemetry}), sets the host
 * of each Jetty connector inside it to loopback, and only then starts it.
 */
public final class DynamoDbLocalLauncher {
    private static final String HOST = "127.0.0.1";

    public static void main(String[] args) throws Exception {
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(args);
        // The Jetty server is a private field with no accessor.
        Field field = DynamoDBProxyServer.class.getDeclaredField("server");
        field.setAccessible(true);
        Server jetty = (Server) field.get(proxy);
        Connector[] connectors = jetty.getConnectors();
        if (connectors.length == 0) {
            throw new IllegalStateException("DynamoDB Local built no Jetty connector to bind");
        }
        for (Connector connector : connectors) {
            if (!(connector instanceof ServerConnector network)) {
                throw new IllegalStateException("unexpected Jetty connector: " + connector);
            }
            network.setHost(HOST);
        }
        proxy.start();
        for (Connector connector : connectors) {
            ServerConnector network = (ServerConnector) connector;
            System.out.println("DynamoDB Local listening on " + network.getHost() + ":"
                    + network.getLocalPort());
        }
        proxy.join();
    }
}
