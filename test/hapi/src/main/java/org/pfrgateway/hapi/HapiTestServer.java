package org.pfrgateway.hapi;

import ca.uhn.fhir.batch2.api.IJobMaintenanceService;
import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.interceptor.api.IInterceptorService;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.interceptor.RequestHeaderPartitionInterceptor;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.partition.PartitionManagementProvider;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.JpaSystemProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.partition.RequestTenantPartitionInterceptor;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.tenant.UrlBaseTenantIdentificationStrategy;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;

/**
 * A HAPI FHIR JPA R4 server with partitioning, for caddy-pfr's end-to-end
 * tests. Usage: {@code java -jar hapi-test-server.jar <header|url> <port>
 * [--exit-on-stdin-eof]}.
 *
 * <p>{@code header}: the partition comes from {@code X-Request-Partition-IDs}
 * (RequestHeaderPartitionInterceptor). {@code url}: from the first path
 * segment after {@code /fhir} (UrlBaseTenantIdentificationStrategy, so
 * {@code /fhir/<partition name>/Patient}). Both serve
 * {@code $partition-management-create-partition} in the DEFAULT partition.
 *
 * <p>HAPI's own Bulk Data export ({@code $export}, {@code Patient/$export},
 * {@code $export-poll-status}, files as Binary resources) is on, per
 * partition: the export of partition N is asked for with
 * {@code X-Request-Partition-IDs: N} (header mode) or at {@code /fhir/N/$export}
 * (url mode, N the partition's name), and its job and files stay in N.
 * It listens on 127.0.0.1 only and prints {@code HAPI ready} once it serves.
 */
public final class HapiTestServer {

	private HapiTestServer() {}

	/** Starts the server; see the class comment for the arguments. */
	public static void main(String[] args) throws Exception {
		boolean watchStdin = args.length == 3 && args[2].equals("--exit-on-stdin-eof");
		if (args.length != 2 && !watchStdin || !(args[0].equals("header") || args[0].equals("url"))) {
			System.err.println("usage: hapi-test-server <header|url> <port> [--exit-on-stdin-eof]");
			System.exit(2);
		}
		if (watchStdin) {
			exitOnStdinEOF();
		}
		String mode = args[0];
		int port = Integer.parseInt(args[1]);
		long start = System.nanoTime();

		AnnotationConfigApplicationContext spring = new AnnotationConfigApplicationContext(HapiTestConfig.class);
		RestfulServer fhir = restfulServer(spring, mode);
		runJobMaintenance(spring.getBean(IJobMaintenanceService.class));

		Server jetty = new Server();
		ServerConnector http = new ServerConnector(jetty);
		http.setHost("127.0.0.1");
		http.setPort(port);
		jetty.addConnector(http);
		ServletContextHandler context = new ServletContextHandler();
		context.setContextPath("/");
		ServletHolder holder = new ServletHolder(fhir);
		holder.setInitOrder(0); // initialize the FHIR servlet at startup, not on the first request
		context.addServlet(holder, "/fhir/*");
		jetty.setHandler(context);
		jetty.setStopAtShutdown(true);
		jetty.start();

		Runtime.getRuntime().addShutdownHook(new Thread(spring::close));
		System.out.printf("HAPI ready: mode=%s http://127.0.0.1:%d/fhir in %.1fs%n",
				mode, port, (System.nanoTime() - start) / 1e9);
		System.out.flush();
		jetty.join();
	}

	/**
	 * Exits once standard input ends: a test that starts the server holds
	 * the other end of the pipe, so the server dies with the test process
	 * even when that is killed before it could stop the server.
	 */
	static void exitOnStdinEOF() {
		Thread watcher = new Thread(() -> {
			try {
				while (System.in.read() >= 0) {
					// discard
				}
			} catch (java.io.IOException e) {
				// a broken pipe ends the parent too
			}
			Runtime.getRuntime().halt(0);
		}, "stdin-watcher");
		watcher.setDaemon(true);
		watcher.start();
	}

	/**
	 * Runs HAPI's batch job maintenance (which moves a job such as a bulk
	 * export from step to step) every half second instead of once a
	 * minute, so that a test's export finishes in seconds.
	 */
	static void runJobMaintenance(IJobMaintenanceService maintenance) {
		Thread t = new Thread(() -> {
			while (true) {
				try {
					Thread.sleep(500);
					maintenance.runMaintenancePass();
				} catch (InterruptedException e) {
					return;
				} catch (RuntimeException e) {
					System.err.println("job maintenance: " + e);
				}
			}
		}, "job-maintenance");
		t.setDaemon(true);
		t.start();
	}

	/** Builds the FHIR servlet from the Spring context, partitioned as mode says. */
	static RestfulServer restfulServer(AnnotationConfigApplicationContext spring, String mode) {
		FhirContext ctx = spring.getBean(FhirContext.class);
		RestfulServer server = new RestfulServer(ctx);
		server.setDefaultPrettyPrint(false);
		server.setPagingProvider(spring.getBean(DatabaseBackedPagingProvider.class));
		server.registerProviders(spring.getBean(ResourceProviderFactory.class).createProviders());
		server.registerProvider(spring.getBean(JpaSystemProvider.class));
		server.registerProvider(spring.getBean(PartitionManagementProvider.class));
		server.registerProvider(spring.getBean(BulkDataExportProvider.class));

		@SuppressWarnings("unchecked")
		IFhirSystemDao<?, ?> systemDao = spring.getBean(IFhirSystemDao.class);
		server.setServerConformanceProvider(new JpaCapabilityStatementProvider(server, systemDao,
				spring.getBean(JpaStorageSettings.class), spring.getBean(ISearchParamRegistry.class),
				spring.getBean(IValidationSupport.class)));

		// The partition interceptor goes on HAPI's JPA-wide interceptor
		// service, not the servlet's own: a REST request consults both,
		// but a batch job's steps (a bulk export's) only the JPA one.
		// There the interceptor also keeps the kick-off's partition (header
		// or tenant) with the job and gives it back to each step's request
		// (STORAGE_PRESTORAGE_BATCH_JOB_CREATE,
		// STORAGE_BATCH_TASK_NEW_REQUEST_DETAILS); registered on the servlet
		// only, a step's reads ask for a partition nobody names (HAPI-1319).
		IInterceptorService jpa = spring.getBean(IInterceptorService.class);
		if (mode.equals("url")) {
			server.setTenantIdentificationStrategy(new UrlBaseTenantIdentificationStrategy());
			jpa.registerInterceptor(spring.getBean(RequestTenantPartitionInterceptor.class));
		} else {
			jpa.registerInterceptor(new RequestHeaderPartitionInterceptor(spring.getBean(PartitionSettings.class)));
		}
		return server;
	}
}
